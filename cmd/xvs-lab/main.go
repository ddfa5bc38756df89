// Command xvs-lab runs the LVS tutorial lab on this machine, in network
// namespaces: a client, two directors running xvsd (VRRP MASTER and
// BACKUP), and two real servers running nginx (or a Go HTTP server where
// nginx is missing). `make demo` runs `xvs-lab demo`: it shows requests
// being balanced, xvsadm's view, and the BACKUP taking over when the
// MASTER stops; then it removes everything it made.
package main

import (
	_ "embed"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/template"
	"time"

	"github.com/xvs-lb/xvs/internal/labserver"
	"github.com/xvs-lb/xvs/internal/netlab"
)

//go:embed keepalived.conf.tmpl
var confTmpl string

// director is one director's settings for the embedded config.
type director struct {
	State    string
	Priority int
}

func main() {
	if len(os.Args) < 2 || os.Args[1] != "demo" {
		fmt.Fprintln(os.Stderr, "usage: xvs-lab demo\n\nBuilds the LVS tutorial lab in network namespaces, runs xvsd on two directors,\nshows balancing and failover, and cleans up. Needs root.")
		os.Exit(2)
	}
	s := &netlab.Script{}
	defer s.Close()
	if err := demo(s); err != nil {
		s.Fatalf("%v", err)
	}
}

func binDir() string {
	exe, err := os.Executable()
	if err != nil {
		return "bin"
	}
	return filepath.Dir(exe)
}

func step(format string, args ...any) {
	fmt.Printf("\n\033[1m==> "+format+"\033[0m\n", args...)
}

func demo(s *netlab.Script) error {
	bin := binDir()
	xvsd, xvsadm, xvsrs := filepath.Join(bin, "xvsd"), filepath.Join(bin, "xvsadm"), filepath.Join(bin, "xvs-rs")
	for _, b := range []string{xvsd, xvsadm, xvsrs} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%s missing: run make build first", b)
		}
	}

	step("Building the lab: client 198.18.0.10, directors 198.18.0.2 (MASTER) and .3 (BACKUP), real servers .11 and .12, VIP 198.18.0.100")
	topo := netlab.Standard(s)
	vip := netip.AddrPortFrom(netlab.VIP, 80)

	step("Real servers: xvs-rs up --vip 198.18.0.100 (VIP on lo, arp_ignore=1, arp_announce=2), then a web server that names itself")
	for _, rs := range []struct {
		h    *netlab.Host
		name string
	}{{topo.RS1, "rs1"}, {topo.RS2, "rs2"}} {
		state := filepath.Join(s.TempDir(), "xvs-rs.state")
		out := rs.h.Run(s, xvsrs, "up", "--vip", netlab.VIP.String(), "--state", state)
		fmt.Printf("%s: %s", rs.name, indent(out))
		if err := startWeb(s, rs.h, rs.name); err != nil {
			return err
		}
	}

	step("Directors: xvsd -f keepalived.conf (the same file as for keepalived; dir1 MASTER priority 150, dir2 BACKUP priority 100)")
	tmpl := template.Must(template.New("conf").Parse(confTmpl))
	procs := map[string]*netlab.Proc{}
	socks := map[string]string{}
	for _, d := range []struct {
		h    *netlab.Host
		name string
		cfg  director
	}{{topo.Dir1, "dir1", director{"MASTER", 150}}, {topo.Dir2, "dir2", director{"BACKUP", 100}}} {
		dir := s.TempDir()
		conf := filepath.Join(dir, "keepalived.conf")
		f, err := os.Create(conf)
		if err != nil {
			return err
		}
		if err := tmpl.Execute(f, d.cfg); err != nil {
			return err
		}
		f.Close()
		socks[d.name] = filepath.Join(dir, "xvsd.sock")
		procs[d.name] = d.h.Start(s, xvsd, "-n", "-l", "-f", conf, "--control", socks[d.name])
		if d.name == "dir1" {
			fmt.Printf("embedded config (%s):\n%s", d.name, indent(readFile(conf)))
		}
	}
	admin := func(h *netlab.Host, name string, args ...string) string {
		out, err := h.Output(xvsadm, append([]string{"--control", socks[name]}, args...)...)
		if err != nil {
			return fmt.Sprintf("xvsadm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	if err := waitFor(15*time.Second, func() bool { return holdsVIP(topo.Dir1) }); err != nil {
		return fmt.Errorf("dir1 never became MASTER: %v\n%s", err, procs["dir1"].Log())
	}
	if err := waitFor(15*time.Second, func() bool { _, err := labserver.Get(topo.Client, vip, time.Second); return err == nil }); err != nil {
		return fmt.Errorf("the VIP does not answer: %v\n%s", err, procs["dir1"].Log())
	}
	fmt.Printf("dir1 holds the VIP: %v, dir2 holds it: %v\n", holdsVIP(topo.Dir1), holdsVIP(topo.Dir2))

	step("Client: 12 requests to http://198.18.0.100/, each on a new connection (wrr, weights rs1=1 rs2=2)")
	tally := map[string]int{}
	for i := range 12 {
		name, err := labserver.Get(topo.Client, vip, 2*time.Second)
		if err != nil {
			name = "FAILED: " + err.Error()
		}
		tally[name]++
		fmt.Printf("  request %2d -> %s\n", i+1, name)
	}
	printTally(tally)

	step("dir1: xvsadm -Ln")
	fmt.Print(admin(topo.Dir1, "dir1", "-Ln"))
	step("dir1: xvsadm -Lnc (the connection table; replies bypass the director in DR, so flows sit in FIN_WAIT/CLOSE states as in IPVS)")
	fmt.Print(admin(topo.Dir1, "dir1", "-Lnc"))
	step("dir1: xvsadm -Ln --stats")
	fmt.Print(admin(topo.Dir1, "dir1", "-Ln", "--stats"))

	step("Client: 4 keep-alive connections opened through dir1, which syncs them to dir2 (lvs_sync_daemon)")
	var kept []*labserver.Conn
	var keptOn []string
	for i := range 4 {
		c, err := labserver.Dial(topo.Client, vip, 2*time.Second)
		if err != nil {
			return fmt.Errorf("keep-alive connection %d: %w", i+1, err)
		}
		defer c.Close()
		name, err := c.Get(2 * time.Second)
		if err != nil {
			return fmt.Errorf("keep-alive connection %d: %w", i+1, err)
		}
		kept, keptOn = append(kept, c), append(keptOn, name)
		fmt.Printf("  connection %d -> %s\n", i+1, name)
	}
	time.Sleep(1500 * time.Millisecond) // a sync walk runs every 500 ms

	step("Failover: stopping xvsd on dir1 (SIGTERM: it sends a priority-0 advert and removes the VIP)")
	start := time.Now()
	procs["dir1"].Stop()
	if err := waitFor(10*time.Second, func() bool { return holdsVIP(topo.Dir2) }); err != nil {
		return fmt.Errorf("dir2 did not take over: %v\n%s", err, procs["dir2"].Log())
	}
	took := time.Since(start)
	if err := waitFor(10*time.Second, func() bool { _, err := labserver.Get(topo.Client, vip, 500*time.Millisecond); return err == nil }); err != nil {
		return fmt.Errorf("the VIP does not answer through dir2: %v\n%s", err, procs["dir2"].Log())
	}
	fmt.Printf("dir2 holds the VIP after %v; dir1 holds it: %v; the client reaches the VIP again after %v\n",
		took.Round(time.Millisecond), holdsVIP(topo.Dir1), time.Since(start).Round(time.Millisecond))
	fmt.Println("dir2 log (VRRP transitions):")
	for line := range strings.Lines(procs["dir2"].Log()) {
		if strings.Contains(line, "MASTER") || strings.Contains(line, "BACKUP") {
			fmt.Print("  " + line)
		}
	}

	step("Client: the 4 keep-alive connections again, now through dir2 (same real server each, thanks to the synced conn table)")
	for i, c := range kept {
		name, err := c.Get(3 * time.Second)
		if err != nil {
			name = "FAILED: " + err.Error()
		}
		same := "same real server"
		if name != keptOn[i] {
			same = "NOT the real server it had (" + keptOn[i] + ")"
		}
		fmt.Printf("  connection %d -> %s: %s\n", i+1, name, same)
	}

	step("Client: 12 more requests, now through dir2")
	tally = map[string]int{}
	for range 12 {
		name, err := labserver.Get(topo.Client, vip, 2*time.Second)
		if err != nil {
			name = "FAILED: " + err.Error()
		}
		tally[name]++
	}
	printTally(tally)
	step("dir2: xvsadm -Ln")
	fmt.Print(admin(topo.Dir2, "dir2", "-Ln"))

	step("Cleaning up: stopping xvsd and the web servers, removing the namespaces")
	procs["dir2"].Stop()
	for name, p := range procs {
		if err := p.Err(); err != nil {
			fmt.Printf("%s: xvsd exited: %v\n", name, err)
		}
	}
	fmt.Println("demo done")
	return nil
}

// startWeb runs nginx in the namespace when it is installed, else a Go
// HTTP server; both answer with the real server's name.
func startWeb(s *netlab.Script, h *netlab.Host, name string) error {
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		labserver.Start(s, h, name, 80, netip.AddrPort{})
		fmt.Printf("%s: Go HTTP server on :80 (nginx not installed)\n", name)
		return nil
	}
	dir := s.TempDir()
	conf := filepath.Join(dir, "nginx.conf")
	text := fmt.Sprintf(`worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %[1]s;
    proxy_temp_path %[1]s;
    fastcgi_temp_path %[1]s;
    uwsgi_temp_path %[1]s;
    scgi_temp_path %[1]s;
    server {
        listen 80;
        location / { default_type text/plain; return 200 "%[2]s\n"; }
    }
}
`, dir, name)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return err
	}
	h.Start(s, nginx, "-c", conf, "-g", "daemon off;")
	fmt.Printf("%s: nginx on :80\n", name)
	return nil
}

var vipRE = regexp.MustCompile(`inet 198\.18\.0\.100/`)

func holdsVIP(h *netlab.Host) bool {
	out, err := h.Output("ip", "-4", "addr", "show", "dev", "eth0")
	return err == nil && vipRE.MatchString(out)
}

func waitFor(d time.Duration, ok func() bool) error {
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

func printTally(t map[string]int) {
	names := make([]string, 0, len(t))
	for n := range t {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Print("  served:")
	for _, n := range names {
		fmt.Printf(" %s=%d", n, t[n])
	}
	fmt.Println()
}

func indent(s string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		b.WriteString("    " + line)
	}
	return b.String()
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}
