package healthcheck

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"
)

// viaVIPProber is the data-path check (xvs_via_vip): a TCP SYN to
// VIP:port framed to the real server's MAC (DR) or wrapped in IPIP to the
// real server (TUN), sent on an AF_PACKET socket; a SYN/ACK from VIP:port
// passes, a RST or silence fails. IPv4 only.
type viaVIPProber struct {
	o    ViaVIPOptions
	rsIP netip.Addr
}

func newViaVIPProber(ep endpoint, o *ViaVIPOptions) (*viaVIPProber, error) {
	if o.Interface == "" {
		return nil, errors.New("xvs_via_vip: no egress interface")
	}
	if len(o.DstMAC) != 6 {
		return nil, fmt.Errorf("xvs_via_vip: real server MAC %q is not an Ethernet address", o.DstMAC)
	}
	if !o.VIP.Is4() || !o.SrcIP.Is4() {
		return nil, fmt.Errorf("xvs_via_vip: VIP %v and source %v must be IPv4", o.VIP, o.SrcIP)
	}
	p := &viaVIPProber{o: *o, rsIP: ep.addr.Addr()}
	if p.o.Port == 0 {
		p.o.Port = ep.addr.Port()
	}
	if p.o.Tunnel && !p.rsIP.Is4() {
		return nil, fmt.Errorf("xvs_via_vip: tunnel to %v needs IPv4", p.rsIP)
	}
	return p, nil
}

// synFrame describes one probe.
type synFrame struct {
	srcMAC, dstMAC net.HardwareAddr
	srcIP, vip     netip.Addr
	tunnelTo       netip.Addr // valid: wrap in IPIP from srcIP to it
	sport, dport   uint16
	seq            uint32
}

// buildSYN returns the Ethernet frame of a probe.
func buildSYN(f synFrame) ([]byte, error) {
	eth := &layers.Ethernet{SrcMAC: f.srcMAC, DstMAC: f.dstMAC, EthernetType: layers.EthernetTypeIPv4}
	inner := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment,
		SrcIP: f.srcIP.AsSlice(), DstIP: f.vip.AsSlice(), Id: uint16(f.seq)}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(f.sport), DstPort: layers.TCPPort(f.dport), Seq: f.seq, SYN: true,
		Window: 64240, Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}}}}
	if err := tcp.SetNetworkLayerForChecksum(inner); err != nil {
		return nil, fmt.Errorf("xvs_via_vip: %w", err)
	}
	ls := []gopacket.SerializableLayer{eth}
	if f.tunnelTo.IsValid() {
		ls = append(ls, &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolIPv4, Flags: layers.IPv4DontFragment,
			SrcIP: f.srcIP.AsSlice(), DstIP: f.tunnelTo.AsSlice(), Id: uint16(f.seq >> 16)})
	}
	ls = append(ls, inner, tcp)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		return nil, fmt.Errorf("xvs_via_vip: build SYN: %w", err)
	}
	return buf.Bytes(), nil
}

// answer classifies a received frame against probe f.
type answer int

const (
	notOurs answer = iota
	synAck
	reset
)

// classify reads an Ethernet frame without allocating: IPv4/TCP from
// VIP:dport to srcIP:sport acknowledging seq+1.
func classify(frame []byte, f synFrame) answer {
	if len(frame) < 14+20+20 || binary.BigEndian.Uint16(frame[12:14]) != 0x0800 {
		return notOurs
	}
	ip := frame[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < 20 || len(ip) < ihl+20 || ip[9] != 6 {
		return notOurs
	}
	vip, src := f.vip.As4(), f.srcIP.As4()
	if [4]byte(ip[12:16]) != vip || [4]byte(ip[16:20]) != src {
		return notOurs
	}
	tcp := ip[ihl:]
	if binary.BigEndian.Uint16(tcp[0:2]) != f.dport || binary.BigEndian.Uint16(tcp[2:4]) != f.sport {
		return notOurs
	}
	flags := tcp[13]
	ack := binary.BigEndian.Uint32(tcp[8:12])
	const fSYN, fRST, fACK = 0x02, 0x04, 0x10
	switch {
	case flags&(fSYN|fACK) == fSYN|fACK && ack == f.seq+1:
		return synAck
	case flags&fRST != 0:
		return reset
	}
	return notOurs
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (p *viaVIPProber) probe(ctx context.Context) result {
	ifi, err := net.InterfaceByName(p.o.Interface)
	if err != nil {
		return fail("xvs_via_vip: %v", err)
	}
	f := synFrame{srcMAC: p.o.SrcMAC, dstMAC: p.o.DstMAC, srcIP: p.o.SrcIP, vip: p.o.VIP,
		sport: uint16(32768 + rand.N(28000)), dport: p.o.Port, seq: rand.Uint32()}
	if len(f.srcMAC) == 0 {
		f.srcMAC = ifi.HardwareAddr
	}
	if len(f.srcMAC) != 6 { // lo and tunnels have none; the frame still needs one
		f.srcMAC = make(net.HardwareAddr, 6)
	}
	if p.o.Tunnel {
		f.tunnelTo = p.rsIP
	}
	frame, err := buildSYN(f)
	if err != nil {
		return fail("%v", err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
	if err != nil {
		return fail("xvs_via_vip: AF_PACKET socket: %v", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return fail("xvs_via_vip: bind %s: %v", p.o.Interface, err)
	}
	// A non-blocking fd in an os.File uses the runtime poller, so read
	// deadlines work and no thread blocks past the timeout.
	file := os.NewFile(uintptr(fd), "xvs_via_vip")
	defer file.Close()
	stop := context.AfterFunc(ctx, func() { _ = file.SetReadDeadline(aLongTimeAgo) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = file.SetReadDeadline(dl)
	}
	if _, err := file.Write(frame); err != nil {
		return fail("xvs_via_vip: send on %s: %v", p.o.Interface, err)
	}
	buf := make([]byte, 2048)
	for {
		n, err := file.Read(buf)
		if err != nil {
			return fail("xvs_via_vip: no SYN/ACK from %v:%d via %s: %v", p.o.VIP, p.o.Port, p.rsIP, err)
		}
		switch classify(buf[:n], f) {
		case synAck:
			return pass()
		case reset:
			return fail("xvs_via_vip: %v:%d via %s answered RST", p.o.VIP, p.o.Port, p.rsIP)
		}
	}
}
