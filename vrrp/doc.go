// Package vrrp owns xvs's embedded VRRP speaker: the VRRPv2 (RFC 3768) and
// VRRPv3 (RFC 5798) advertisement codec for IPv4 and IPv6, the per-instance
// state machine (INIT, BACKUP, MASTER and keepalived's FAULT), the raw IP
// protocol-112 transport, and everything a keepalived user expects around it:
// virtual addresses added and removed with netlink, gratuitous ARP and
// unsolicited neighbour advertisements, vrrp_script tracking with weights,
// track_interface, vrrp_sync_group, notify scripts and SMTP alerts.
//
// Configuration is given as plain structs ([Config], [Instance], ...) whose
// fields mirror keepalived.conf keywords; the daemon maps its parsed
// keepalived.conf onto them. A [Speaker] runs all instances of a config:
//
//	sp, err := vrrp.New(cfg, vrrp.WithStateHook(func(inst string, s vrrp.State) { ... }))
//	go sp.Run(ctx)     // until ctx is done or Stop is called
//	sp.States()        // instance name → state
//	sp.Stats()         // per-instance counters, drop reasons
//	sp.Stop()          // priority-0 adverts from every MASTER, VIPs removed
//
// The protocol logic is a step function over an injected [Conn] and clock
// (the pattern of seesaw's ha package), so the state machine is tested
// without root over an in-memory network; the raw socket, netlink and ARP
// pieces sit behind small interfaces with real Linux implementations.
//
// The daemon learns of transitions through [WithStateHook] (so a BACKUP
// director stops forwarding) and exports [Speaker.Stats] as metrics: every
// dropped advert is counted by [DropReason] and logged once per cause.
// [LinuxHost] opens its sockets in the network namespace of the calling
// process.
//
// use_vmac (RFC 5798 §7.3, as keepalived does it): the instance gets a
// macvlan in private mode with MAC 00:00:5e:00:01:VRID (00:00:5e:00:02:VRID
// for IPv6), which carries its multicast adverts (unicast ones and, with
// vmac_xmit_base, all leave by the interface, as keepalived's) and the VIPs
// of its interface, so neighbours keep one MAC for the VIP across
// failovers. It is removed on a graceful stop. Besides keepalived's
// sysctls, the base interface gets arp_announce=2 while a vmac is on it
// (see linux_vmac.go for why).
//
// An instance whose interface is missing, or has no address, waits in FAULT
// and attaches when it appears; one whose interface vanishes goes to FAULT.
// Link changes arrive through a netlink subscription ([LinkWatcher]), with
// polling as the fallback. Not supported yet: auth_type AH,
// track_file/track_process/BFD.
//
// Interop notes (keepalived 2.2 behaviour mirrored here): priority 0 is sent
// when a MASTER stops or enters FAULT; `state MASTER` with priority below 255
// starts as BACKUP with a Master_Down timer of one advert interval plus skew
// rather than three; a MASTER that hears a lower-priority advert answers with
// an advert at once; the v2 PASS password is compared on its first 8 bytes.
package vrrp
