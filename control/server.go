package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// ListReply is what List answers.
type ListReply struct {
	Info     Info
	Services []Service // each with its Dests, Stats and Rates
}

// Handler is implemented by the daemon: one method per op. Methods are
// called from the server's connection goroutines, possibly concurrently;
// the daemon serialises changes itself. Errors should wrap this package's
// sentinels (ErrNoService, ErrDestExists, ...) so that xvsadm prints
// ipvsadm's message for them.
type Handler interface {
	AddService(ctx context.Context, svc Service) error
	EditService(ctx context.Context, svc Service) error
	DelService(ctx context.Context, key ServiceKey) error
	AddDest(ctx context.Context, key ServiceKey, d Dest) error
	EditDest(ctx context.Context, key ServiceKey, d Dest) error
	DelDest(ctx context.Context, key ServiceKey, d DestKey) error
	// Clear deletes every virtual service (ipvsadm -C).
	Clear(ctx context.Context) error
	// List returns all services, or only the one key names (ErrNoService
	// when it does not exist).
	List(ctx context.Context, key *ServiceKey) (ListReply, error)
	// Zero resets the counters of one service, or of all when key is nil.
	Zero(ctx context.Context, key *ServiceKey) error
	SetTimeouts(ctx context.Context, t Timeouts) error
	GetTimeouts(ctx context.Context) (Timeouts, error)
	Conns(ctx context.Context) ([]Conn, error)
	// StartDaemon starts a sync daemon role (ipvsadm --start-daemon):
	// ErrDaemonRunning when the role already runs, ErrNoDevice when the
	// interface does not exist. Settings left zero take IPVS's defaults.
	StartDaemon(ctx context.Context, sd SyncDaemon) error
	// StopDaemon stops the role (ipvsadm --stop-daemon): ErrNoDaemon
	// when it does not run.
	StopDaemon(ctx context.Context, role SyncRole) error
	// Daemons lists the running roles, master first, with the settings
	// they run with (ipvsadm -L --daemon).
	Daemons(ctx context.Context) ([]SyncDaemon, error)
}

// Server serves the control protocol on a unix socket.
type Server struct {
	h    Handler
	ln   *net.UnixListener
	path string
	log  *slog.Logger

	// Owned by Serve and Close, under mu.
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// IdleTimeout closes a connection that sends nothing for this long, so a
// stuck client cannot hold a goroutine forever.
const IdleTimeout = 30 * time.Second

// Listen creates the control socket at path with mode 0600, replacing a
// stale socket left by a previous daemon (but not any other kind of file).
func Listen(path string, h Handler, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("control socket %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another daemon is listening", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control socket %s: removing stale socket: %w", path, err)
		}
	}
	ln, err := listenUnix0600(path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return &Server{h: h, ln: ln, path: path, log: log, conns: map[net.Conn]struct{}{}}, nil
}

// listenUnix0600 binds the socket inside a fresh 0700 directory, makes it
// 0600 and only then renames it to path, so that there is no moment when
// path exists with looser permissions. (Changing the umask instead would
// affect every goroutine of the daemon.)
func listenUnix0600(path string) (*net.UnixListener, error) {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".xvs-control-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	// The listener's own name is gone after the rename; Close removes
	// path instead.
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Serve accepts connections until Close, then returns nil.
func (s *Server) Serve() error {
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			// Out of file descriptors and the like pass; back off
			// rather than spin, as net/http does.
			s.log.Warn("control socket: accept", "path", s.path, "err", err)
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Close stops accepting, closes open connections, waits for their
// handlers to return and removes the socket.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
		err = rerr
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) serveConn(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 4096)
	enc := json.NewEncoder(c)
	for {
		c.SetReadDeadline(time.Now().Add(IdleTimeout))
		line, err := readLine(r, MaxRequestSize)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("control connection", "err", err)
				if errors.Is(err, errLineTooLong) {
					enc.Encode(Response{Code: CodeInvalid, Error: err.Error()})
				}
			}
			return
		}
		resp, fatal := s.handleLine(line)
		c.SetWriteDeadline(time.Now().Add(IdleTimeout))
		if err := enc.Encode(resp); err != nil {
			s.log.Debug("control connection: write", "err", err)
			return
		}
		if fatal {
			return
		}
	}
}

var errLineTooLong = fmt.Errorf("request longer than %d bytes", MaxRequestSize)

// readLine reads one '\n'-terminated line of at most max bytes (a final
// line without '\n' counts).
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := r.ReadSlice('\n')
		if len(line)+len(frag) > max {
			return nil, errLineTooLong
		}
		line = append(line, frag...)
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return line, nil
		default:
			return nil, err
		}
	}
}

// handleLine decodes and runs one request. fatal reports a request so
// malformed that the connection should be closed after answering.
func (s *Server) handleLine(line []byte) (resp Response, fatal bool) {
	req, err := DecodeRequest(line)
	if err != nil {
		return Response{Code: CodeInvalid, Error: err.Error()}, true
	}
	ctx, cancel := context.WithTimeout(context.Background(), IdleTimeout)
	defer cancel()
	resp, err = Dispatch(ctx, s.h, req)
	if err != nil {
		s.log.Debug("control request failed", "op", req.Op, "err", err)
		return Response{Code: CodeOf(err), Error: err.Error()}, false
	}
	return resp, false
}

// DecodeRequest parses and checks one request line.
func DecodeRequest(line []byte) (*Request, error) {
	var req Request
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if derr := dec.Decode(&req); derr != nil {
		return nil, fmt.Errorf("request: %w", derr)
	}
	if dec.More() {
		return nil, errors.New("request: trailing data after the JSON object")
	}
	if req.V != ProtocolVersion {
		return nil, fmt.Errorf("request: protocol version %d: this daemon speaks %d", req.V, ProtocolVersion)
	}
	var err error
	needSvc := func() error {
		if req.Service == nil {
			return fmt.Errorf("request %s: no service", req.Op)
		}
		return req.Service.ServiceKey.Validate()
	}
	needDest := func() error {
		if req.Dest == nil {
			return fmt.Errorf("request %s: no destination", req.Op)
		}
		if !req.Dest.Addr.IsValid() {
			return fmt.Errorf("request %s: destination has no address", req.Op)
		}
		return nil
	}
	switch req.Op {
	case OpAddService, OpEditService, OpDelService:
		err = needSvc()
	case OpAddDest, OpEditDest, OpDelDest:
		err = needSvc()
		if err == nil {
			err = needDest()
		}
	case OpList, OpZero:
		if req.Service != nil {
			err = req.Service.ServiceKey.Validate()
		}
	case OpSetTimeouts:
		if req.Timeouts == nil {
			err = errors.New("request SetTimeouts: no timeouts")
		} else if req.Timeouts.TCP < 0 || req.Timeouts.TCPFin < 0 || req.Timeouts.UDP < 0 {
			err = errors.New("request SetTimeouts: negative timeout")
		}
	case OpStartDaemon, OpStopDaemon:
		switch {
		case req.Daemon == nil:
			err = fmt.Errorf("request %s: no daemon", req.Op)
		case req.Daemon.Role != SyncMaster && req.Daemon.Role != SyncBackup:
			err = fmt.Errorf("request %s: no role", req.Op)
		}
	case OpClear, OpGetTimeouts, OpConns, OpDaemons:
	default:
		err = fmt.Errorf("request: unknown op %q", req.Op)
	}
	if err != nil {
		return nil, err
	}
	return &req, nil
}

// Dispatch calls the Handler method for a decoded request.
func Dispatch(ctx context.Context, h Handler, req *Request) (Response, error) {
	var resp Response
	var err error
	keyOf := func() *ServiceKey {
		if req.Service == nil {
			return nil
		}
		k := req.Service.ServiceKey
		return &k
	}
	// Settings that make no sense are refused here, so that a Handler
	// only sees values ipvsadm could have sent.
	switch req.Op {
	case OpAddService, OpEditService:
		err = req.Service.ValidateSettings()
	case OpAddDest, OpEditDest:
		err = req.Dest.Validate()
	case OpSetTimeouts:
		t := req.Timeouts
		if t.TCP > MaxTimeout || t.TCPFin > MaxTimeout || t.UDP > MaxTimeout {
			err = fmt.Errorf("timeouts %d %d %d: longer than %d s", t.TCP, t.TCPFin, t.UDP, MaxTimeout)
		}
	case OpStartDaemon:
		err = req.Daemon.Validate()
	}
	if err != nil {
		return Response{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	switch req.Op {
	case OpAddService:
		svc := *req.Service
		svc.Dests = nil
		err = h.AddService(ctx, svc)
	case OpEditService:
		svc := *req.Service
		svc.Dests = nil
		err = h.EditService(ctx, svc)
	case OpDelService:
		err = h.DelService(ctx, req.Service.ServiceKey)
	case OpAddDest:
		err = h.AddDest(ctx, req.Service.ServiceKey, *req.Dest)
	case OpEditDest:
		err = h.EditDest(ctx, req.Service.ServiceKey, *req.Dest)
	case OpDelDest:
		err = h.DelDest(ctx, req.Service.ServiceKey, req.Dest.Key())
	case OpClear:
		err = h.Clear(ctx)
	case OpList:
		var lr ListReply
		lr, err = h.List(ctx, keyOf())
		if lr.Info == (Info{}) {
			lr.Info = DefaultInfo
		}
		resp.Info, resp.Services = &lr.Info, lr.Services
	case OpZero:
		err = h.Zero(ctx, keyOf())
	case OpSetTimeouts:
		err = h.SetTimeouts(ctx, *req.Timeouts)
	case OpGetTimeouts:
		var t Timeouts
		t, err = h.GetTimeouts(ctx)
		resp.Timeouts = &t
	case OpConns:
		resp.Conns, err = h.Conns(ctx)
	case OpStartDaemon:
		sd := *req.Daemon
		sd.FromConfig = false
		err = h.StartDaemon(ctx, sd)
	case OpStopDaemon:
		err = h.StopDaemon(ctx, req.Daemon.Role)
	case OpDaemons:
		resp.Daemons, err = h.Daemons(ctx)
	default:
		err = fmt.Errorf("op %q: %w", req.Op, ErrInvalid)
	}
	if err != nil {
		return Response{}, err
	}
	return resp, nil
}
