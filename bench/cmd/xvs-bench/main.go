// Command xvs-bench generates traffic traces, replays them at line rate
// into a veth, and runs the benchmark suite (packet replay through the
// baselines and the device under test, end to end through kernel
// forwarding, HAProxy and xvsd) printing one table. See bench/README.md.
//
//	xvs-bench gen --size 64 --flows 512 --dist zipf -o trace.pcap
//	xvs-bench replay --netns NS --ifname IF --pcap trace.pcap --duration 5s
//	xvs-bench run [--quick]
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xvs-lb/xvs/bench/benchxdp"
	"github.com/xvs-lb/xvs/bench/suite"
	"github.com/xvs-lb/xvs/bench/trace"
	"github.com/xvs-lb/xvs/internal/netlab"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "gen":
		err = gen(os.Args[2:])
	case "replay":
		err = replay(os.Args[2:])
	case "run":
		err = run(os.Args[2:])
	case "-h", "--help", "help":
		usage()
		return
	default:
		usage()
		os.Exit(2)
	}
	if err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "xvs-bench %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: xvs-bench <command> [flags]
  gen     write a synthetic trace (pcap) of client flows to VIPs
  replay  replay a pcap into a veth at line rate (BPF_PROG_RUN live frames)
  run     run the benchmark suite and print the table (--quick: about 6 minutes)
xvs-bench <command> --help lists the flags.
`)
}

func traceFlags(fs *pflag.FlagSet) (*trace.Config, *int) {
	c := &trace.Config{}
	nvips := fs.Int("vips", 1, "number of VIPs, from 198.18.0.100 up")
	fs.IntVar(&c.Packets, "packets", 8192, "frames in the trace")
	fs.IntVar(&c.Flows, "flows", 512, "distinct flows")
	fs.StringVar(&c.Dist, "dist", "uniform", "flow sizes: uniform or zipf")
	fs.Float64Var(&c.ZipfS, "zipf-s", 1.2, "Zipf exponent (> 1)")
	fs.StringVar(&c.Proto, "proto", "tcp", "tcp (SYN, ACK, data, FIN), udp, or mix")
	fs.StringVar(&c.Size, "size", "64", "frame size: 64, 1514, imix or a captured length 60..1514")
	fs.Uint16Var(&c.Port, "port", 80, "destination port")
	fs.Uint64Var(&c.Seed, "seed", 1, "random seed (same seed, same trace)")
	return c, nvips
}

func gen(args []string) error {
	fs := pflag.NewFlagSet("gen", pflag.ContinueOnError)
	c, nvips := traceFlags(fs)
	out := fs.StringP("out", "o", "trace.pcap", "pcap file to write")
	dst := fs.String("dst-mac", trace.DirectorMAC.String(), "destination MAC (the director)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if c.DstMAC, err = net.ParseMAC(*dst); err != nil {
		return fmt.Errorf("--dst-mac: %w", err)
	}
	c.VIPs = suite.VIPs(*nvips)
	t, err := trace.Generate(*c)
	if err != nil {
		return err
	}
	if err := trace.WritePcapFile(*out, t.Frames); err != nil {
		return err
	}
	fmt.Printf("%s: %d frames, %d flows\n", *out, len(t.Frames), len(t.Flows))
	return nil
}

func replay(args []string) error {
	fs := pflag.NewFlagSet("replay", pflag.ContinueOnError)
	ns := fs.String("netns", "", "network namespace of the interface (ip netns name); empty = this one")
	ifname := fs.String("ifname", "", "veth to transmit on (its peer must have an XDP program)")
	pcap := fs.String("pcap", "", "pcap to replay (Ethernet)")
	rate := fs.Float64("rate", 0, "packets per second; 0 = as fast as possible")
	dur := fs.Duration("duration", 5*time.Second, "stop after this long (0 = only --count; with --count alone, no time limit)")
	count := fs.Uint64("count", 0, "stop after this many packets")
	cpu := fs.Int("cpu", -1, "pin the generator to this CPU")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *ifname == "" || *pcap == "" {
		return errors.New("--ifname and --pcap are required")
	}
	if fs.Changed("count") && !fs.Changed("duration") {
		*dur = 0
	}
	frames, err := trace.ReadPcapFile(*pcap)
	if err != nil {
		return err
	}
	r, err := benchxdp.LoadReplayer(frames)
	if err != nil {
		return err
	}
	defer r.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	runtime.LockOSThread() // the thread enters the namespace and stays pinned
	if *ns != "" {
		h, err := netns.GetFromName(*ns)
		if err != nil {
			return fmt.Errorf("netns %s: %w", *ns, err)
		}
		if err := netns.Set(h); err != nil {
			return fmt.Errorf("enter netns %s: %w", *ns, err)
		}
	}
	if *cpu >= 0 {
		var set unix.CPUSet
		set.Set(*cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			return fmt.Errorf("pin to cpu%d: %w", *cpu, err)
		}
	}
	ifi, err := net.InterfaceByName(*ifname)
	if err != nil {
		return err
	}
	res, err := r.Run(ctx, benchxdp.ReplayOptions{Ifindex: ifi.Index, Rate: *rate, Count: *count, Duration: *dur})
	if err != nil {
		return err
	}
	fmt.Printf("%d frames (%d distinct, %d bytes written per frame) in %v: %.3f Mpps; %d not built\n",
		res.Emitted, r.Frames(), r.CopyLen(), res.Elapsed.Round(time.Millisecond), res.Mpps(), res.Errors)
	return nil
}

func run(args []string) error {
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	quick := fs.Bool("quick", false, "short runs (make bench): 1 s packet runs, 3 s wrk runs, 3 wrk runs per cell")
	o := suite.Options{Place: suite.DefaultPlacement()}
	fs.IntVar(&o.Runs, "runs", 5, "packet measurements per forwarder and size")
	fs.DurationVar(&o.Duration, "duration", 3*time.Second, "generator time per packet measurement")
	sizes := fs.String("sizes", "64,1514", "frame sizes of the generated traces")
	fs.StringVar(&o.Pcap, "pcap", "", "replay this pcap instead of generated traces")
	c, nvips := traceFlags(fs)
	fs.BoolVar(&o.NoPacket, "no-packet", false, "skip the packet replay benchmarks")
	fs.BoolVar(&o.NoE2E, "no-e2e", false, "skip the end-to-end benchmarks")
	fs.StringSliceVar(&o.Forwarders, "forwarders", nil, "only these packet rows (e.g. xsk-null,\"xvsd-dr wlc\")")
	fs.DurationVar(&o.E2E.Duration, "e2e-duration", 10*time.Second, "wrk run time")
	fs.IntVar(&o.E2E.Runs, "e2e-runs", 5, "wrk runs per path and mode")
	fs.IntVar(&o.E2E.Connections, "connections", 32, "wrk connections")
	fs.IntVar(&o.Place.Gen, "gen-cpu", o.Place.Gen, "generator CPU")
	fs.IntVar(&o.Place.SinkNAPI, "sink-cpu", o.Place.SinkNAPI, "sink (generator-side veth NAPI thread) CPU")
	fs.IntVar(&o.Place.DirNAPI, "napi-cpu", o.Place.DirNAPI, "director-side veth NAPI thread CPU")
	fs.IntVar(&o.Place.Worker, "worker-cpu", o.Place.Worker, "forwarder worker CPU (also nginx, HAProxy)")
	fs.IntVar(&o.E2E.ClientCPU, "client-cpu", 0, "wrk's CPU")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *quick {
		if !fs.Changed("duration") {
			o.Duration = time.Second
		}
		if !fs.Changed("e2e-duration") {
			o.E2E.Duration = 3 * time.Second
		}
		if !fs.Changed("e2e-runs") {
			o.E2E.Runs = 3
		}
	}
	o.Sizes = strings.Split(*sizes, ",")
	o.Trace = *c
	// By default the trace addresses every VIP of the DUT's service table.
	o.Trace.VIPs = suite.VIPs(suite.ServiceVIPs)
	if fs.Changed("vips") {
		o.Trace.VIPs = suite.VIPs(*nvips)
	}
	o.Log = os.Stderr

	script := &netlab.Script{}
	defer script.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := suite.Run(ctx, script, o)
	if rep != nil {
		rep.Took = time.Since(rep.Start)
		rep.Write(os.Stdout)
		fmt.Printf("\ntook %v\n", rep.Took.Round(time.Second))
	}
	return err
}
