package control_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/xvs-lb/xvs/control"
	"github.com/xvs-lb/xvs/control/controltest"
)

// A daemon serves its Handler on the control socket; xvsadm dials it.
func Example() {
	dir, _ := os.MkdirTemp("", "xvs-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "xvsd.sock")

	srv, err := control.Listen(path, controltest.NewMemory(), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	go srv.Serve()
	defer srv.Close()

	ctx := context.Background()
	c, err := control.Dial(ctx, path)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	web := control.ServiceKey{Proto: control.TCP, Addr: netip.MustParseAddr("198.18.0.100"), Port: 80}
	c.AddService(ctx, control.Service{ServiceKey: web, Sched: "wrr"})
	c.AddDest(ctx, web, control.Dest{Addr: netip.MustParseAddr("198.18.0.11"), Port: 80, Weight: 1})
	err = c.AddDest(ctx, web, control.Dest{Addr: netip.MustParseAddr("198.18.0.11"), Port: 80, Weight: 1})
	fmt.Println(err.(*control.OpError).Message())

	lr, _ := c.List(ctx, nil)
	control.WriteList(os.Stdout, lr.Info, lr.Services, control.Format{Numeric: true})
	// Output:
	// Destination already exists
	// IP Virtual Server version 1.2.1 (size=4096)
	// Prot LocalAddress:Port Scheduler Flags
	//   -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
	// TCP  198.18.0.100:80 wrr
	//   -> 198.18.0.11:80               Route   1      0          0
}
