package vrrp

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the lab tests run this test binary as an xvs VRRP speaker
// inside a namespace: `vrrp.test vrrp-helper CONFIG.json STATS.json`.
// SIGTERM stops it gracefully; SIGKILL is a crash.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "vrrp-helper" {
		os.Exit(helperMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}

func helperMain(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: vrrp-helper CONFIG.json STATS.json")
		return 2
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "config:", err)
		return 1
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts := []Option{WithLogger(log)}
	// VRRP_HELPER_LINK_POLL slows the link poll so that a test can tell
	// the netlink subscription's work from the poll's.
	if d, err := time.ParseDuration(os.Getenv("VRRP_HELPER_LINK_POLL")); err == nil {
		opts = append(opts, WithLinkPoll(d))
	}
	sp, err := New(cfg, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	writeStats := func() {
		b, _ := json.Marshal(sp.Stats())
		tmp := args[1] + ".tmp"
		if os.WriteFile(tmp, b, 0o644) == nil {
			_ = os.Rename(tmp, args[1])
		}
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				writeStats()
			}
		}
	}()
	err = sp.Run(ctx)
	close(done)
	writeStats()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	log.Info("vrrp-helper: stopped")
	return 0
}
