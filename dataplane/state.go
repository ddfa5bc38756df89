package dataplane

import "time"

// Conn states. The TCP ones are IPVS's (ip_vs_proto_tcp.c), in its order; the
// director sees only the client→server half of a DR/TUN flow, so transitions
// follow IPVS's "input only" table. UDP flows have one state; persistence
// templates another.
const (
	stFree uint8 = iota
	StateNone
	StateEstablished
	StateSynSent
	StateSynRecv
	StateFinWait
	StateTimeWait
	StateClose
	StateCloseWait
	StateLastAck
	StateListen
	StateSynAck
	StateUDP
	StateTemplate
	// stNATOut marks a NAT flow's reply-direction index entry (IPVS's
	// out table): (client, real server) → dest. It is counted nowhere;
	// the flow's state lives in its forward entry.
	stNATOut
	// stNATOutEst is stNATOut for a flow whose forward entry is
	// ESTABLISHED. An index entry takes its forward entry's expiry each
	// time that changes, and this state with it, so that a reply can tell
	// from the index alone that it leaves the flow as it is.
	stNATOutEst
	numStates
)

var stateNames = [numStates]string{
	"FREE", "NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT",
	"TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK", "UDP",
	"NONE", "OUT", "OUT",
}

// natOutState is the state of a NAT flow's reply index entry when its
// forward entry is in state s.
func natOutState(s uint8) uint8 {
	if s == StateEstablished {
		return stNATOutEst
	}
	return stNATOut
}

// StateName returns the state as ipvsadm -Lnc prints it.
func StateName(s uint8) string {
	if s < numStates {
		return stateNames[s]
	}
	return "?"
}

// defaultTimeouts are IPVS's (tcp_timeouts[] and udp_timeouts[]), in seconds.
// The template timeout is per service (persistence_timeout) and is not here.
var defaultTimeouts = [numStates]uint32{
	StateNone:        2,
	StateEstablished: 15 * 60,
	StateSynSent:     2 * 60,
	StateSynRecv:     60,
	StateFinWait:     2 * 60,
	StateTimeWait:    2 * 60,
	StateClose:       10,
	StateCloseWait:   60,
	StateLastAck:     30,
	StateListen:      2 * 60,
	StateSynAck:      2 * 60,
	StateUDP:         5 * 60,
}

// Timeouts are the conn-table timeouts ipvsadm --set changes; a zero field
// leaves that timeout as it is.
type Timeouts struct {
	TCP    time.Duration // ESTABLISHED
	TCPFin time.Duration // FIN_WAIT
	UDP    time.Duration
}

// tcpEvent indexes the state table rows (IPVS tcp_state_idx): RST wins over
// SYN, SYN over FIN, FIN over ACK; a segment without any of them (-1) leaves
// the state unchanged.
func tcpEvent(flags uint8) int {
	switch {
	case flags&TCPRst != 0:
		return 3
	case flags&TCPSyn != 0:
		return 0
	case flags&TCPFin != 0:
		return 1
	case flags&TCPAck != 0:
		return 2
	}
	return -1
}

// inputOnly is IPVS's INPUT-ONLY transition table, columns in IPVS order
// sNO sES sSS sSR sFW sTW sCL sCW sLA sLI sSA (our StateNone..StateSynAck).
var inputOnly = [4][11]uint8{
	/*syn*/ {StateSynRecv, StateEstablished, StateEstablished, StateSynRecv, StateSynRecv, StateSynRecv, StateSynRecv, StateSynRecv, StateSynRecv, StateSynRecv, StateSynRecv},
	/*fin*/ {StateClose, StateFinWait, StateSynSent, StateTimeWait, StateFinWait, StateTimeWait, StateClose, StateCloseWait, StateLastAck, StateListen, StateTimeWait},
	/*ack*/ {StateEstablished, StateEstablished, StateSynSent, StateEstablished, StateFinWait, StateTimeWait, StateClose, StateCloseWait, StateClose, StateListen, StateEstablished},
	/*rst*/ {StateClose, StateClose, StateClose, StateSynRecv, StateClose, StateClose, StateClose, StateClose, StateLastAck, StateListen, StateClose},
}

// tcpIn and tcpOut are IPVS's INPUT and OUTPUT tables, for NAT, where the
// director sees both halves of a connection: client→server segments move
// the state by tcpIn, server→client replies by tcpOut. (sNO+ack is sES as
// in inputOnly, so a flow imported or recreated mid-stream recovers.)
var tcpIn = [4][11]uint8{
	/*syn*/ {StateSynRecv, StateEstablished, StateEstablished, StateSynRecv, StateSynRecv, StateSynRecv, StateSynRecv, StateSynRecv, StateSynRecv, StateSynRecv, StateSynRecv},
	/*fin*/ {StateClose, StateCloseWait, StateSynSent, StateTimeWait, StateTimeWait, StateTimeWait, StateClose, StateCloseWait, StateLastAck, StateListen, StateTimeWait},
	/*ack*/ {StateEstablished, StateEstablished, StateSynSent, StateEstablished, StateFinWait, StateTimeWait, StateClose, StateCloseWait, StateClose, StateListen, StateEstablished},
	/*rst*/ {StateClose, StateClose, StateClose, StateSynRecv, StateClose, StateClose, StateClose, StateClose, StateLastAck, StateListen, StateSynRecv},
}

var tcpOut = [4][11]uint8{
	/*syn*/ {StateSynSent, StateEstablished, StateSynSent, StateSynRecv, StateSynSent, StateSynSent, StateSynSent, StateSynSent, StateSynSent, StateListen, StateSynRecv},
	/*fin*/ {StateTimeWait, StateFinWait, StateSynSent, StateTimeWait, StateFinWait, StateTimeWait, StateClose, StateTimeWait, StateLastAck, StateListen, StateTimeWait},
	/*ack*/ {StateEstablished, StateEstablished, StateSynSent, StateEstablished, StateFinWait, StateTimeWait, StateClose, StateCloseWait, StateLastAck, StateEstablished, StateEstablished},
	/*rst*/ {StateClose, StateClose, StateSynSent, StateClose, StateClose, StateTimeWait, StateClose, StateClose, StateClose, StateClose, StateClose},
}

// tcpTable selects a transition table.
type tcpTable uint8

const (
	tcpInputOnly tcpTable = iota // DR, TUN: the director sees one half
	tcpInput                     // NAT, client → server
	tcpOutput                    // NAT, server → client
)

// nextTCPState applies a segment's flags to state s (INPUT-ONLY table).
func nextTCPState(s, flags uint8) uint8 { return nextTCPStateIn(tcpInputOnly, s, flags) }

// nextTCPStateIn applies a segment's flags to state s by table tb.
func nextTCPStateIn(tb tcpTable, s, flags uint8) uint8 {
	ev := tcpEvent(flags)
	if ev < 0 || s < StateNone || s > StateSynAck {
		return s
	}
	switch tb {
	case tcpInput:
		return tcpIn[ev][s-StateNone]
	case tcpOutput:
		return tcpOut[ev][s-StateNone]
	}
	return inputOnly[ev][s-StateNone]
}
