package healthcheck_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/xvs-lb/xvs/healthcheck"
)

// The daemon maps a virtual_server block to a Service and turns each
// Transition into a new scheduler snapshot.
func ExampleNewPool() {
	p := healthcheck.NewPool(healthcheck.PoolOptions{}, func(t healthcheck.Transition) {
		fmt.Printf("%s %s up=%v in=%v weight=%d\n", t.Service, t.Server, t.Up, t.InPool, t.Weight)
	})
	defer p.Close()
	err := p.Update([]healthcheck.Service{{
		VIP: netip.MustParseAddr("198.18.0.100"), Port: 80, Quorum: 1,
		Sorry: &healthcheck.SorryServer{Addr: netip.MustParseAddr("198.18.0.13"), Port: 80},
		Servers: []healthcheck.RealServer{{
			Addr: netip.MustParseAddr("198.18.0.11"), Port: 80, Weight: 1, InhibitOnFailure: true,
			Checkers: []healthcheck.Checker{{
				Type: healthcheck.HTTPGet, DelayLoop: 6 * time.Second, ConnectTimeout: 3 * time.Second,
				Retry: healthcheck.Ptr(3), DelayBeforeRetry: healthcheck.Ptr(3 * time.Second),
				HTTP: &healthcheck.HTTPOptions{URLs: []healthcheck.URL{{Path: "/health", StatusCodes: []healthcheck.StatusRange{{Lo: 200, Hi: 299}}}}},
			}},
		}},
	}})
	if err != nil {
		fmt.Println(err)
	}
}
