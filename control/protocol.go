package control

import (
	"errors"
	"fmt"
)

// ProtocolVersion is the "v" every request carries. A server refuses
// versions it does not know rather than guess at their meaning.
const ProtocolVersion = 1

// MaxRequestSize bounds one request line. The largest legitimate request
// (a Service with its settings) is well under 1 KiB.
const MaxRequestSize = 64 << 10

// Op names a request.
type Op string

// The ops, one per Handler method.
const (
	OpAddService  Op = "AddService"  // ipvsadm -A
	OpEditService Op = "EditService" // ipvsadm -E
	OpDelService  Op = "DelService"  // ipvsadm -D
	OpAddDest     Op = "AddDest"     // ipvsadm -a
	OpEditDest    Op = "EditDest"    // ipvsadm -e
	OpDelDest     Op = "DelDest"     // ipvsadm -d
	OpClear       Op = "Clear"       // ipvsadm -C
	OpList        Op = "List"        // ipvsadm -L, -S
	OpZero        Op = "Zero"        // ipvsadm -Z
	OpSetTimeouts Op = "SetTimeouts" // ipvsadm --set
	OpGetTimeouts Op = "GetTimeouts" // ipvsadm -L --timeout
	OpConns       Op = "Conns"       // ipvsadm -Lc
	OpStartDaemon Op = "StartDaemon" // ipvsadm --start-daemon
	OpStopDaemon  Op = "StopDaemon"  // ipvsadm --stop-daemon
	OpDaemons     Op = "Daemons"     // ipvsadm -L --daemon
)

// Request is one line from client to server. Which fields matter depends
// on Op:
//
//	AddService, EditService  Service (settings; Dests ignored)
//	DelService               Service (key)
//	AddDest, EditDest        Service (key), Dest
//	DelDest                  Service (key), Dest (address and port)
//	List, Zero               Service (key) to name one service, or none for all
//	SetTimeouts              Timeouts
//	StartDaemon              Daemon (role, interface and settings)
//	StopDaemon               Daemon (role)
//	Clear, GetTimeouts, Conns, Daemons  nothing
type Request struct {
	V        int         `json:"v"`
	Op       Op          `json:"op"`
	Service  *Service    `json:"service,omitempty"`
	Dest     *Dest       `json:"dest,omitempty"`
	Timeouts *Timeouts   `json:"timeouts,omitempty"`
	Daemon   *SyncDaemon `json:"daemon,omitempty"`
}

// Response is one line from server to client.
type Response struct {
	Code     ErrorCode `json:"code,omitempty"`
	Error    string    `json:"error,omitempty"`
	Info     *Info     `json:"info,omitempty"`     // List
	Services []Service `json:"services,omitempty"` // List
	Conns    []Conn    `json:"conns,omitempty"`    // Conns
	Timeouts *Timeouts `json:"timeouts,omitempty"` // GetTimeouts
	// Daemons lists the running sync daemon roles, master first.
	Daemons []SyncDaemon `json:"daemons,omitempty"` // Daemons
}

// ErrorCode says what kind of failure a Response reports, in the terms
// ipvsadm's error messages use.
type ErrorCode string

// The error codes. Each has a sentinel error below; a Handler returns (or
// wraps) the sentinel and the server sends its code.
const (
	CodeServiceExists ErrorCode = "service-exists" // IPVS: EEXIST on a service op
	CodeNoService     ErrorCode = "no-service"     // ESRCH
	CodeDestExists    ErrorCode = "dest-exists"    // EEXIST on a real-server op
	CodeNoDest        ErrorCode = "no-dest"        // ENOENT on a real-server op
	CodeNoScheduler   ErrorCode = "no-scheduler"   // ENOENT on a service op
	CodeInvalid       ErrorCode = "invalid"        // EINVAL: the request makes no sense
	CodeDaemonRunning ErrorCode = "daemon-running" // EEXIST on --start-daemon: the role runs
	CodeNoDaemon      ErrorCode = "no-daemon"      // ESRCH on --stop-daemon: the role does not run
	CodeNoDevice      ErrorCode = "no-device"      // ENODEV: no such (multicast) interface
	CodeUnsupported   ErrorCode = "unsupported"    // xvs does not do this (yet)
	CodeFailed        ErrorCode = "failed"         // anything else
)

// Sentinel errors a Handler returns, wrapped with detail (%w).
var (
	ErrServiceExists = errors.New("service already exists")
	ErrNoService     = errors.New("no such service")
	ErrDestExists    = errors.New("destination already exists")
	ErrNoDest        = errors.New("no such destination")
	ErrNoScheduler   = errors.New("scheduler or persistence engine not found")
	ErrInvalid       = errors.New("invalid operation")
	ErrDaemonRunning = errors.New("sync daemon already running in this role")
	ErrNoDaemon      = errors.New("no sync daemon running in this role")
	ErrNoDevice      = errors.New("no such interface")
	ErrUnsupported   = errors.New("not supported by xvs")
)

var codeErrs = []struct {
	code ErrorCode
	err  error
}{
	{CodeServiceExists, ErrServiceExists},
	{CodeNoService, ErrNoService},
	{CodeDestExists, ErrDestExists},
	{CodeNoDest, ErrNoDest},
	{CodeNoScheduler, ErrNoScheduler},
	{CodeInvalid, ErrInvalid},
	{CodeDaemonRunning, ErrDaemonRunning},
	{CodeNoDaemon, ErrNoDaemon},
	{CodeNoDevice, ErrNoDevice},
	{CodeUnsupported, ErrUnsupported},
}

// CodeOf is the code the server sends for a Handler's error.
func CodeOf(err error) ErrorCode {
	for _, ce := range codeErrs {
		if errors.Is(err, ce.err) {
			return ce.code
		}
	}
	return CodeFailed
}

// OpError is a failed op as the client sees it.
type OpError struct {
	Op     Op
	Code   ErrorCode
	Detail string // the daemon's own text
}

func (e *OpError) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("%s: %s", e.Op, e.Detail)
	}
	return fmt.Sprintf("%s: %s", e.Op, e.Code)
}

// Is lets errors.Is(err, ErrNoService) and friends match by code.
func (e *OpError) Is(target error) bool {
	for _, ce := range codeErrs {
		if ce.err == target {
			return e.Code == ce.code
		}
	}
	return false
}

// Message is the line ipvsadm prints for a failed op (libipvs's
// ipvs_strerror): the same failure reads differently depending on the op,
// so that "Service not defined" answers a real-server command and "No such
// service" a service command. For failures ipvsadm has no specific text
// for, it is the daemon's detail.
func (e *OpError) Message() string {
	dest := e.Op == OpAddDest || e.Op == OpEditDest || e.Op == OpDelDest
	switch e.Code {
	case CodeServiceExists:
		return "Service already exists"
	case CodeNoService:
		if dest {
			return "Service not defined"
		}
		return "No such service"
	case CodeDestExists:
		return "Destination already exists"
	case CodeNoDest:
		return "No such destination"
	case CodeNoScheduler:
		return "Scheduler or persistence engine not found"
	case CodeDaemonRunning:
		return "Daemon has already run"
	case CodeNoDaemon:
		return "No daemon is running"
	case CodeNoDevice:
		// ipvsadm has no text of its own for ENODEV: strerror's.
		return "No such device"
	}
	if e.Detail != "" {
		return e.Detail
	}
	return "Invalid operation.  Possibly wrong module version, address not unicast, ..."
}

// Message is ipvsadm's text for a failure code of an op.
func Message(op Op, code ErrorCode) string {
	return (&OpError{Op: op, Code: code}).Message()
}
