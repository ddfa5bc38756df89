// Command xvsd is the xvs director: keepalived's job (virtual servers,
// health checks, VRRP) with an AF_XDP packet path instead of IPVS. It reads
// keepalived.conf and takes keepalived's options where they make sense.
package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/xvs-lb/xvs/director"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := pflag.NewFlagSet("xvsd", pflag.ContinueOnError)
	var (
		file     = fs.StringP("use-file", "f", "/etc/keepalived/keepalived.conf", "configuration file")
		_        = fs.BoolP("dont-fork", "n", false, "stay in the foreground (xvsd always does; accepted for keepalived's command lines)")
		_        = fs.BoolP("log-console", "l", false, "log to the console (xvsd always logs to stderr; accepted for keepalived's command lines)")
		detail   = fs.BoolP("log-detail", "D", false, "detailed (debug) log")
		pidFile  = fs.StringP("pid", "p", "", "write the process ID to this file")
		test     = fs.BoolP("config-test", "t", false, "check the configuration and exit (non-zero with the errors)")
		vrrpOnly = fs.BoolP("vrrp", "P", false, "run VRRP only (no virtual servers)")
		lvsOnly  = fs.BoolP("check", "C", false, "run virtual servers and health checks only (no VRRP)")
		ctlPath  = fs.String("control", "/run/xvsd.sock", "control socket for xvsadm (\"\" = none)")
		metrics  = fs.String("metrics", "", "serve Prometheus metrics on this address, e.g. 127.0.0.1:9105")
		insecure = fs.Bool("insecure-scripts", false, "run notify/MISC_CHECK scripts that fail keepalived's script security rules (world-writable)")
	)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: xvsd [options]\n\nThe xvs director: LVS virtual servers on AF_XDP, health checks and VRRP, from keepalived.conf.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return 0
		}
		fmt.Fprintf(os.Stderr, "xvsd: %v\n", err)
		return 2
	}
	if *vrrpOnly && *lvsOnly {
		fmt.Fprintln(os.Stderr, "xvsd: -P and -C exclude each other")
		return 2
	}
	if *test {
		diags, err := director.Check(*file)
		if s := diags.String(); s != "" {
			fmt.Fprint(os.Stderr, s)
			if s[len(s)-1] != '\n' {
				fmt.Fprintln(os.Stderr)
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "xvsd: %s: configuration refused\n", *file)
			return 1
		}
		fmt.Fprintf(os.Stderr, "xvsd: %s: configuration OK\n", *file)
		return 0
	}

	level := slog.LevelInfo
	if *detail {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	if *pidFile != "" {
		if err := os.WriteFile(*pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			log.Error("pid file", "err", err)
			return 1
		}
		defer os.Remove(*pidFile)
	}

	// Subscribe before starting, so a SIGHUP during start-up is not lost.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)

	d, err := director.Start(director.Options{
		ConfigFile: *file, ControlPath: *ctlPath, MetricsAddr: *metrics,
		VRRPOnly: *vrrpOnly, LVSOnly: *lvsOnly, InsecureScripts: *insecure, Logger: log,
	})
	if err != nil {
		log.Error("xvsd: start failed", "err", err)
		return 1
	}
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			log.Info("SIGHUP: reloading", "config", *file)
			_ = d.Reload() // a refused reload is logged; the running config stays
			continue
		}
		log.Info("stopping", "signal", sig.String())
		if err := d.Close(); err != nil {
			log.Error("stop", "err", err)
			return 1
		}
		return 0
	}
	return 0
}
