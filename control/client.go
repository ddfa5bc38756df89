package control

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"time"
)

// DefaultPath is where xvsd listens and xvsadm connects unless told
// otherwise (--control, XVS_CONTROL).
const DefaultPath = "/run/xvsd.sock"

// Client speaks to xvsd over one connection. Its methods may be called
// from several goroutines; requests are sent one at a time.
type Client struct {
	mu   sync.Mutex // serialises request/response pairs on conn
	conn net.Conn
	r    *bufio.Reader
	enc  *json.Encoder
}

// Dial connects to the control socket at path.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return &Client{conn: c, r: bufio.NewReaderSize(c, 64<<10), enc: json.NewEncoder(c)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Do sends one request and waits for its response. A failed op comes back
// as an *OpError.
func (c *Client) Do(ctx context.Context, req Request) (*Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	req.V = ProtocolVersion
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetDeadline(dl)
	} else {
		c.conn.SetDeadline(time.Time{})
	}
	if err := c.enc.Encode(&req); err != nil {
		return nil, fmt.Errorf("control %s: send: %w", req.Op, err)
	}
	line, err := c.r.ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("control %s: receive: %w", req.Op, err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return nil, fmt.Errorf("control %s: response: %w", req.Op, err)
	}
	if resp.Code != "" || resp.Error != "" {
		code := resp.Code
		if code == "" {
			code = CodeFailed
		}
		return nil, &OpError{Op: req.Op, Code: code, Detail: resp.Error}
	}
	return &resp, nil
}

func svcReq(op Op, key ServiceKey) Request {
	return Request{Op: op, Service: &Service{ServiceKey: key}}
}

// AddService adds a virtual service (ipvsadm -A).
func (c *Client) AddService(ctx context.Context, svc Service) error {
	svc.Dests = nil
	_, err := c.Do(ctx, Request{Op: OpAddService, Service: &svc})
	return err
}

// EditService replaces a virtual service's settings (ipvsadm -E).
func (c *Client) EditService(ctx context.Context, svc Service) error {
	svc.Dests = nil
	_, err := c.Do(ctx, Request{Op: OpEditService, Service: &svc})
	return err
}

// DelService deletes a virtual service and its real servers (ipvsadm -D).
func (c *Client) DelService(ctx context.Context, key ServiceKey) error {
	_, err := c.Do(ctx, svcReq(OpDelService, key))
	return err
}

// AddDest adds a real server to a service (ipvsadm -a).
func (c *Client) AddDest(ctx context.Context, key ServiceKey, d Dest) error {
	req := svcReq(OpAddDest, key)
	req.Dest = &d
	_, err := c.Do(ctx, req)
	return err
}

// EditDest replaces a real server's settings (ipvsadm -e).
func (c *Client) EditDest(ctx context.Context, key ServiceKey, d Dest) error {
	req := svcReq(OpEditDest, key)
	req.Dest = &d
	_, err := c.Do(ctx, req)
	return err
}

// DelDest removes a real server from a service (ipvsadm -d).
func (c *Client) DelDest(ctx context.Context, key ServiceKey, d DestKey) error {
	req := svcReq(OpDelDest, key)
	req.Dest = &Dest{Addr: d.Addr, Port: d.Port}
	_, err := c.Do(ctx, req)
	return err
}

// Clear deletes every virtual service (ipvsadm -C).
func (c *Client) Clear(ctx context.Context) error {
	_, err := c.Do(ctx, Request{Op: OpClear})
	return err
}

// List returns every service, or the one key names.
func (c *Client) List(ctx context.Context, key *ServiceKey) (ListReply, error) {
	req := Request{Op: OpList}
	if key != nil {
		req = svcReq(OpList, *key)
	}
	resp, err := c.Do(ctx, req)
	if err != nil {
		return ListReply{}, err
	}
	lr := ListReply{Info: DefaultInfo, Services: resp.Services}
	if resp.Info != nil {
		lr.Info = *resp.Info
	}
	return lr, nil
}

// Zero resets counters of one service, or of all when key is nil.
func (c *Client) Zero(ctx context.Context, key *ServiceKey) error {
	req := Request{Op: OpZero}
	if key != nil {
		req = svcReq(OpZero, *key)
	}
	_, err := c.Do(ctx, req)
	return err
}

// SetTimeouts sets the connection timeouts (ipvsadm --set).
func (c *Client) SetTimeouts(ctx context.Context, t Timeouts) error {
	_, err := c.Do(ctx, Request{Op: OpSetTimeouts, Timeouts: &t})
	return err
}

// GetTimeouts reads the connection timeouts.
func (c *Client) GetTimeouts(ctx context.Context) (Timeouts, error) {
	resp, err := c.Do(ctx, Request{Op: OpGetTimeouts})
	if err != nil {
		return Timeouts{}, err
	}
	if resp.Timeouts == nil {
		return Timeouts{}, fmt.Errorf("control GetTimeouts: response without timeouts")
	}
	return *resp.Timeouts, nil
}

// Conns returns the connection table.
func (c *Client) Conns(ctx context.Context) ([]Conn, error) {
	resp, err := c.Do(ctx, Request{Op: OpConns})
	if err != nil {
		return nil, err
	}
	return resp.Conns, nil
}

// StartDaemon starts a connection sync daemon role (ipvsadm
// --start-daemon); unset settings take IPVS's defaults.
func (c *Client) StartDaemon(ctx context.Context, sd SyncDaemon) error {
	sd.FromConfig = false
	_, err := c.Do(ctx, Request{Op: OpStartDaemon, Daemon: &sd})
	return err
}

// StopDaemon stops the sync daemon running in a role (ipvsadm
// --stop-daemon), whoever started it.
func (c *Client) StopDaemon(ctx context.Context, role SyncRole) error {
	_, err := c.Do(ctx, Request{Op: OpStopDaemon, Daemon: &SyncDaemon{Role: role}})
	return err
}

// Daemons lists the running sync daemon roles (ipvsadm -L --daemon).
func (c *Client) Daemons(ctx context.Context) ([]SyncDaemon, error) {
	resp, err := c.Do(ctx, Request{Op: OpDaemons})
	if err != nil {
		return nil, err
	}
	return resp.Daemons, nil
}
