// Command xvs-rs prepares a host as a real server behind an xvs (or LVS)
// director: VIPs on lo, ARP sysctls, and for TUN mode the decapsulation of
// the director's tunnelled packets (IPv4 or IPv6 outer header). The logic
// lives in package rs.
package main

import (
	"os"

	"github.com/xvs-lb/xvs/rs"
)

func main() {
	os.Exit(rs.Main(os.Args[1:], os.Stdout, os.Stderr))
}
