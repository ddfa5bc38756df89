package vrrp

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// instance is one vrrp_instance. The speaker's core goroutine owns it
// (under Speaker.mu).
type instance struct {
	s       *Speaker
	cfg     *Instance
	group   *group
	v6      bool
	vmac    *VMAC // use_vmac, or nil
	vipList []VIP // the VIPs, with the instance's interface replaced by the vmac

	// Attachment to the interface (see attach): the conns it holds, the one
	// adverts leave by and the one they arrive on.
	attached  bool
	conns     []*connState
	txc, rxc  *connState
	attachErr string       // last attach error logged
	src       netip.Addr   // primary address (advert source, tie-break)
	dsts      []netip.Addr // multicast group or unicast peers
	vips      []netip.Addr // addresses carried in adverts
	auth      [8]byte      // auth_pass, first 8 bytes, zero padded

	state State
	prio  uint8 // effective priority
	fault bool  // own tracked objects say FAULT

	masterAdverInt time.Duration // v3: learned from the master
	masterAddr     netip.Addr
	downAt         time.Time // BACKUP: Master_Down_Timer
	adverAt        time.Time // MASTER: Adver_Timer
	garpAt         time.Time // MASTER: delayed gratuitous ARP round
	refreshAt      time.Time // MASTER: periodic gratuitous ARP refresh
	preemptAt      time.Time // BACKUP: end of preempt_delay

	stats  InstanceStats
	logged [numDropReasons]bool

	adv Advert // the advert we send
	buf []byte
	rx  Advert
}

func newInstance(s *Speaker, cfg *Instance) *instance {
	in := &instance{s: s, cfg: cfg, prio: cfg.Priority, masterAdverInt: cfg.AdvertInt}
	in.v6 = cfg.VirtualIPAddresses[0].Prefix.Addr().Is6()
	for _, v := range cfg.VirtualIPAddresses {
		in.vips = append(in.vips, v.Prefix.Addr())
	}
	copy(in.auth[:], cfg.AuthPass)
	if cfg.UseVMAC {
		in.vmac = &VMAC{Name: cfg.VMACName, Base: cfg.Interface, MAC: vmacAddr(cfg.VirtualRouterID, in.v6), V6: in.v6}
	}
	for _, v := range cfg.VirtualIPAddresses {
		// keepalived puts the VIPs of the instance's own interface on
		// the vmac, so that ARP answers them with the virtual MAC.
		if in.vmac != nil && v.Dev == cfg.Interface {
			v.Dev = in.vmac.Name
		}
		in.vipList = append(in.vipList, v)
	}
	if len(cfg.UnicastPeers) > 0 {
		in.dsts = cfg.UnicastPeers
	} else if in.v6 {
		in.dsts = []netip.Addr{s.cfg.Globals.McastGroup6}
	} else {
		in.dsts = []netip.Addr{s.cfg.Globals.McastGroup4}
	}
	in.adv = Advert{Version: uint8(cfg.Version), VRID: cfg.VirtualRouterID, Interval: cfg.AdvertInt, Addrs: in.vips}
	if cfg.Version == 2 && cfg.AuthType == AuthPass {
		in.adv.AuthType = AuthPass
		in.adv.AuthData = in.auth
	}
	in.buf = make([]byte, 0, headerLen+len(in.vips)*16+authDataLen)
	return in
}

func (in *instance) resolveSource() error {
	switch {
	case in.cfg.UnicastSrcIP.IsValid():
		in.src = in.cfg.UnicastSrcIP
	case in.cfg.McastSrcIP.IsValid():
		in.src = in.cfg.McastSrcIP
	default:
		a, err := in.s.host.PrimaryAddr(in.cfg.Interface, in.v6)
		if err != nil {
			return fmt.Errorf("vrrp: instance %s: primary address of %s: %w", in.cfg.Name, in.cfg.Interface, err)
		}
		in.src = a
	}
	return nil
}

// rxOnBase: adverts for the instance arrive on its interface's shared conn:
// without a vmac, or with unicast peers (addressed to the base's MAC).
// Multicast adverts whose source MAC is the virtual MAC (a peer's vmac)
// are handed by a private-mode macvlan only to the macvlan with that MAC,
// so with a vmac they are read there.
func (in *instance) rxOnBase() bool { return in.vmac == nil || len(in.cfg.UnicastPeers) > 0 }

// txOnBase: adverts leave by the base interface without a vmac, with
// vmac_xmit_base, and (as keepalived does) to unicast peers: from the vmac
// the ARP request for a peer carries the virtual MAC as source, which the
// peer's own private-mode vmac swallows, so the peer never answers.
// Otherwise they leave by the vmac, so that switches learn where the
// virtual MAC is (RFC 5798 §2.4).
func (in *instance) txOnBase() bool {
	return in.vmac == nil || in.cfg.VMACXmitBase || len(in.cfg.UnicastPeers) > 0
}

// attach makes the instance ready to speak on its interface: its source
// address, its vmac if any, and its conns. On failure nothing is held.
func (in *instance) attach() error {
	s := in.s
	if err := in.resolveSource(); err != nil {
		return err
	}
	var held []*connState
	fail := func(err error) error {
		for _, cs := range held {
			s.release(cs)
		}
		if in.vmac != nil {
			_ = s.host.RemoveVMAC(*in.vmac)
		}
		return fmt.Errorf("vrrp: instance %s: %w", in.cfg.Name, err)
	}
	if in.vmac != nil {
		if in.v6 {
			in.vmac.LinkLocal = in.src
		}
		if err := s.host.SetupVMAC(*in.vmac); err != nil {
			in.vmac.LinkLocal = netip.Addr{}
			return fmt.Errorf("vrrp: instance %s: use_vmac %s: %w", in.cfg.Name, in.vmac.Name, err)
		}
		up, err := s.host.LinkUp(in.vmac.Name)
		s.links[in.vmac.Name] = linkState{up: up && err == nil, exists: err == nil}
	}
	var base, own *connState
	if in.rxOnBase() || in.txOnBase() {
		k := connKey{in.cfg.Interface, in.v6}
		cs, err := s.acquire(k, s.baseGroup[k], false)
		if err != nil {
			return fail(err)
		}
		held = append(held, cs)
		base = cs
	}
	if !in.rxOnBase() || !in.txOnBase() {
		var group netip.Addr
		if !in.rxOnBase() {
			group = in.dsts[0]
		}
		cs, err := s.acquire(connKey{in.vmac.Name, in.v6}, group, true)
		if err != nil {
			return fail(err)
		}
		held = append(held, cs)
		own = cs
	}
	in.txc, in.rxc = base, base
	if !in.txOnBase() {
		in.txc = own
	}
	if !in.rxOnBase() {
		in.rxc = own
	}
	in.rxc.byVRID[in.cfg.VirtualRouterID] = in
	in.conns = held
	in.attached = true
	// Like keepalived, start from a clean interface: a VIP left by a
	// crashed run must not answer while we are BACKUP (nor be taken for
	// the primary address).
	for _, v := range in.vipList {
		_ = s.host.DelAddr(v)
	}
	if in.attachErr != "" {
		s.log.Info("vrrp: instance attached to its interface", "instance", in.cfg.Name, "interface", in.cfg.Interface)
		in.attachErr = ""
	}
	return nil
}

// detach releases the conns and, if removeVMAC, the vmac.
func (in *instance) detach(removeVMAC bool) {
	if !in.attached {
		return
	}
	if in.rxc.byVRID[in.cfg.VirtualRouterID] == in {
		in.rxc.byVRID[in.cfg.VirtualRouterID] = nil
	}
	for _, cs := range in.conns {
		in.s.release(cs)
	}
	in.conns, in.txc, in.rxc = nil, nil, nil
	in.attached = false
	if removeVMAC && in.vmac != nil {
		if err := in.s.host.RemoveVMAC(*in.vmac); err != nil && !errors.Is(err, ErrNoLink) {
			in.s.log.Warn("vrrp: remove vmac", "instance", in.cfg.Name, "vmac", in.vmac.Name, "err", err)
		}
	}
}

// logAttach logs an attach failure once per distinct error.
func (in *instance) logAttach(err error) {
	if msg := err.Error(); msg != in.attachErr {
		in.attachErr = msg
		in.s.log.Warn("vrrp: instance waits in FAULT for its interface", "instance", in.cfg.Name, "err", err)
	}
}

// followInterface detaches an instance whose interface (or vmac) vanished,
// and attaches one whose interface is present.
func (in *instance) followInterface(now time.Time) {
	s := in.s
	if in.attached {
		if s.links[in.cfg.Interface].exists && (in.vmac == nil || s.links[in.vmac.Name].exists) {
			return
		}
		in.logAttach(fmt.Errorf("interface %s or its vmac: %w", in.cfg.Interface, ErrNoLink))
		if in.state != StateFault {
			in.enterFault(now)
		}
		in.detach(true)
		// Only the vmac went (an administrator deleted it): recreate it
		// at once.
	}
	if !s.links[in.cfg.Interface].exists {
		return
	}
	if err := in.attach(); err != nil {
		in.logAttach(err)
	}
}

// skew is Skew_Time: ((256 - Priority) * Master_Adver_Interval) / 256
// (RFC 5798 §6.1; RFC 3768 uses the same with whole seconds).
func (in *instance) skew() time.Duration {
	return time.Duration(256-int(in.prio)) * in.masterAdverInt / 256
}

// masterDown is Master_Down_Interval: 3 × Master_Adver_Interval + Skew_Time.
func (in *instance) masterDown() time.Duration {
	return 3*in.masterAdverInt + in.skew()
}

// evalTracking recomputes the effective priority and own fault from the
// tracked interfaces and scripts (keepalived's weight rules: a positive
// weight is added while up/succeeding, a negative one while down/failing,
// weight 0 means FAULT while down/failing; the owner's 255 never moves).
func (in *instance) evalTracking() {
	s := in.s
	fault := !in.attached || !s.links[in.cfg.Interface].up || in.vmac != nil && !s.links[in.vmac.Name].up
	total := int(in.cfg.Priority)
	for _, ti := range in.cfg.TrackInterfaces {
		up := s.links[ti.Name].up
		switch {
		case ti.Weight == 0 && !up:
			fault = true
		case ti.Weight > 0 && up, ti.Weight < 0 && !up:
			total += ti.Weight
		}
	}
	for _, ts := range in.cfg.TrackScripts {
		sc := s.scripts[ts.Name]
		w := sc.cfg.Weight
		if ts.HasWeight {
			w = ts.Weight
		}
		switch {
		case w == 0 && !sc.ok:
			fault = true
		case w > 0 && sc.ok, w < 0 && !sc.ok:
			total += w
		}
	}
	if in.cfg.Priority == 255 {
		total = 255
	} else {
		total = min(max(total, 1), 254)
	}
	if uint8(total) != in.prio {
		s.log.Info("vrrp: effective priority changed", "instance", in.cfg.Name, "from", in.prio, "to", total)
		in.prio = uint8(total)
	}
	in.fault = fault
}

// initState is RFC 5798 §6.4.1 (Initialize) with keepalived's start rules.
func (in *instance) initState(now time.Time) {
	if in.fault || (in.group != nil && groupFault(in.group)) {
		in.setState(StateFault)
		return
	}
	in.masterAdverInt = in.cfg.AdvertInt
	if in.prio == 255 {
		in.becomeMaster(now)
		return
	}
	in.setState(StateBackup)
	if in.cfg.State == StateMaster {
		// keepalived: a `state MASTER` instance waits one advert interval
		// (plus skew) for a better master before taking over.
		in.downAt = now.Add(in.masterAdverInt + in.skew())
	} else {
		in.downAt = now.Add(in.masterDown())
	}
}

func (in *instance) setState(st State) {
	if in.state == st {
		return
	}
	from := in.state
	in.state = st
	in.s.log.Info("vrrp: state change", "instance", in.cfg.Name, "from", from, "to", st, "priority", in.prio)
	if in.s.onState != nil {
		in.s.hooks = append(in.s.hooks, stateChange{in.cfg.Name, st})
	}
	in.s.notifyInstance(in, st)
}

func (in *instance) send(now time.Time, prio uint8) {
	if in.txc == nil || !in.s.links[in.txc.key.ifname].exists {
		return // detached, or the interface just vanished
	}
	in.adv.Priority = prio
	for _, dst := range in.dsts {
		b, err := in.adv.Append(in.buf[:0], in.src, dst)
		if err != nil {
			in.s.log.Error("vrrp: encode advert", "instance", in.cfg.Name, "err", err)
			return
		}
		in.buf = b
		if err := in.txc.conn.Send(b, in.src, dst); err != nil {
			in.s.log.Warn("vrrp: send advert", "instance", in.cfg.Name, "dst", dst, "err", err)
			continue
		}
		in.stats.AdvertsSent++
		if prio == 0 {
			in.stats.PriorityZeroTx++
		}
	}
}

func (in *instance) becomeMaster(now time.Time) {
	in.send(now, in.prio)
	in.adverAt = now.Add(in.cfg.AdvertInt)
	in.downAt = time.Time{}
	in.preemptAt = time.Time{}
	in.addVIPs()
	in.announce(in.garpRepeat())
	if d := in.garpDelay(); d > 0 {
		in.garpAt = now.Add(d)
	}
	if r := in.garpRefresh(); r > 0 {
		in.refreshAt = now.Add(r)
	}
	in.masterAddr = in.src
	in.stats.BecameMaster++
	in.setState(StateMaster)
	in.s.syncMembers(in, StateMaster, now)
}

func (in *instance) becomeBackup(now time.Time) {
	if in.state == StateMaster {
		in.leaveMaster()
	}
	in.downAt = now.Add(in.masterDown())
	in.setState(StateBackup)
	in.s.syncMembers(in, StateBackup, now)
}

func (in *instance) leaveMaster() {
	in.delVIPs()
	in.adverAt, in.garpAt, in.refreshAt = time.Time{}, time.Time{}, time.Time{}
	in.stats.LeftMaster++
}

// enterFault: a MASTER says goodbye with priority 0, as keepalived does.
func (in *instance) enterFault(now time.Time) {
	if in.state == StateMaster {
		in.send(now, 0)
		in.leaveMaster()
	}
	in.downAt = time.Time{}
	in.setState(StateFault)
}

func (in *instance) leaveFault(now time.Time) {
	in.masterAdverInt = in.cfg.AdvertInt
	if in.prio == 255 {
		in.becomeMaster(now)
		return
	}
	in.downAt = now.Add(in.masterDown())
	in.setState(StateBackup)
}

func (in *instance) stop(now time.Time) {
	if in.state == StateMaster {
		in.send(now, 0)
		in.leaveMaster()
		in.s.log.Info("vrrp: left MASTER with priority 0", "instance", in.cfg.Name)
	}
	in.s.notifyInstance(in, StateStop)
	in.state = StateInit
}

// timers fires the instance's due timers (RFC 5798 §6.4.2, §6.4.3).
func (in *instance) timers(now time.Time) {
	switch in.state {
	case StateBackup:
		if !in.downAt.IsZero() && !now.Before(in.downAt) {
			in.becomeMaster(now)
		}
	case StateMaster:
		if !in.adverAt.IsZero() && !now.Before(in.adverAt) {
			in.send(now, in.prio)
			in.adverAt = now.Add(in.cfg.AdvertInt)
		}
		if !in.garpAt.IsZero() && !now.Before(in.garpAt) {
			in.garpAt = time.Time{}
			in.announce(in.garpRepeat())
		}
		if !in.refreshAt.IsZero() && !now.Before(in.refreshAt) {
			in.refreshAt = now.Add(in.garpRefresh())
			in.announce(in.s.cfg.Globals.GarpMasterRefreshRepeat)
		}
	}
}

func (in *instance) garpDelay() time.Duration {
	if in.cfg.GarpMasterDelay != 0 {
		return in.cfg.GarpMasterDelay
	}
	return in.s.cfg.Globals.GarpMasterDelay
}

func (in *instance) garpRepeat() int {
	if in.cfg.GarpMasterRepeat != 0 {
		return in.cfg.GarpMasterRepeat
	}
	return in.s.cfg.Globals.GarpMasterRepeat
}

func (in *instance) garpRefresh() time.Duration {
	if in.cfg.GarpMasterRefresh != 0 {
		return in.cfg.GarpMasterRefresh
	}
	return in.s.cfg.Globals.GarpMasterRefresh
}

func (in *instance) addVIPs() {
	for _, v := range in.vipList {
		if err := in.s.host.AddAddr(v); err != nil {
			in.s.log.Error("vrrp: add virtual address", "instance", in.cfg.Name, "addr", v.Prefix, "dev", v.Dev, "err", err)
		}
	}
}

func (in *instance) delVIPs() {
	for _, v := range in.vipList {
		if err := in.s.host.DelAddr(v); err != nil {
			in.s.log.Warn("vrrp: remove virtual address", "instance", in.cfg.Name, "addr", v.Prefix, "dev", v.Dev, "err", err)
		}
	}
}

func (in *instance) announce(n int) {
	for range n {
		for _, v := range in.vipList {
			if err := in.s.host.Announce(v.Dev, v.Prefix.Addr()); err != nil {
				in.s.log.Warn("vrrp: gratuitous announce", "instance", in.cfg.Name, "addr", v.Prefix, "err", err)
				return
			}
		}
	}
}

// receive handles a valid advert for this instance (RFC 5798 §6.4.2/§6.4.3).
func (in *instance) receive(a *Advert, src netip.Addr, now time.Time) {
	in.stats.AdvertsRecv++
	if a.Priority == 0 {
		in.stats.PriorityZeroRx++
	}
	switch in.state {
	case StateBackup:
		if a.Priority == 0 {
			// The master left: take over after Skew_Time.
			in.downAt = now.Add(in.skew())
			return
		}
		lower := a.Priority < in.prio
		delaying := false
		if lower && in.cfg.PreemptDelay > 0 && !in.cfg.NoPreempt {
			if in.preemptAt.IsZero() {
				in.preemptAt = now.Add(in.cfg.PreemptDelay)
				in.s.log.Info("vrrp: preempt delay started", "instance", in.cfg.Name, "delay", in.cfg.PreemptDelay)
			}
			delaying = now.Before(in.preemptAt)
		}
		if !lower {
			in.preemptAt = time.Time{}
		}
		if in.cfg.NoPreempt || !lower || delaying {
			if in.cfg.Version == 3 && a.Interval > 0 {
				in.masterAdverInt = a.Interval
			}
			in.downAt = now.Add(in.masterDown())
			in.masterAddr = src
		}
		// Otherwise a lower-priority master is ignored and we preempt
		// when Master_Down_Timer fires.
	case StateMaster:
		if a.Priority == 0 {
			in.send(now, in.prio)
			in.adverAt = now.Add(in.cfg.AdvertInt)
			return
		}
		if a.Priority > in.prio || (a.Priority == in.prio && addrGreater(src, in.src)) {
			if in.cfg.Version == 3 && a.Interval > 0 {
				in.masterAdverInt = a.Interval
			}
			in.masterAddr = src
			in.becomeBackup(now)
			return
		}
		// keepalived answers a lower-priority master at once so it backs
		// off without waiting for our next advert.
		in.send(now, in.prio)
		in.adverAt = now.Add(in.cfg.AdvertInt)
	}
}

func addrGreater(a, b netip.Addr) bool {
	x, y := a.As16(), b.As16()
	return bytes.Compare(x[:], y[:]) > 0
}

// check applies the per-instance validation of RFC 3768 §7.1 / RFC 5798
// §7.1 to a parsed advert.
func (in *instance) check(p *Packet, a *Advert) DropReason {
	if p.TTL >= 0 && p.TTL != 255 {
		return DropTTL
	}
	if p.Src == in.src {
		return DropOwn
	}
	if int(a.Version) != in.cfg.Version {
		return DropVersion
	}
	if a.Version == 2 {
		if a.AuthType != in.adv.AuthType {
			return DropAuthType
		}
		if a.AuthType == AuthPass && a.AuthData != in.auth {
			return DropAuth
		}
		if a.Interval != in.cfg.AdvertInt {
			return DropInterval
		}
	}
	if len(a.Addrs) != len(in.vips) {
		return DropAddrCount
	}
	return DropNone
}

// handlePacket validates a received message and feeds it to its instance.
func (s *Speaker) handlePacket(cs *connState, p *Packet, now time.Time) {
	var in *instance
	if len(p.Data) > offVRID {
		vrid := p.Data[offVRID]
		in = cs.byVRID[vrid]
		if in == nil && (cs.vmac || s.vmacRx[cs.key] != nil && s.vmacRx[cs.key][vrid]) {
			// A vmac hears the whole LAN, and the base hears a vmac
			// instance's peers too: each packet is judged on one conn.
			return
		}
	}
	var rx *Advert
	if in != nil {
		rx = &in.rx
	} else {
		rx = &Advert{}
	}
	r := Parse(p.Data, p.Src, p.Dst, rx)
	if r == DropNone && in == nil {
		r = DropVRID
	}
	if r == DropNone {
		r = in.check(p, rx)
	}
	if r != DropNone {
		s.drop(cs, in, r, p)
		return
	}
	in.receive(rx, p.Src, now)
}

// drop counts a rejected packet and logs the first of each cause.
func (s *Speaker) drop(cs *connState, in *instance, r DropReason, p *Packet) {
	if in == nil {
		s.unattributed[r]++
		if !cs.logged[r] {
			cs.logged[r] = true
			s.log.Warn("vrrp: dropped packet (further drops for this cause are only counted)",
				"interface", cs.key.ifname, "reason", r, "src", p.Src, "len", len(p.Data))
		}
		return
	}
	in.stats.Drops[r]++
	if !in.logged[r] {
		in.logged[r] = true
		s.log.Warn("vrrp: dropped advert (further drops for this cause are only counted)",
			"instance", in.cfg.Name, "reason", r, "src", p.Src, "ttl", p.TTL, "len", len(p.Data))
	}
}
