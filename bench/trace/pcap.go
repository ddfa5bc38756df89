package trace

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// epoch is the first frame's timestamp: fixed, so a regenerated pcap is
// byte-identical.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// WritePcap writes frames as an Ethernet pcap, 1 µs apart.
func WritePcap(w io.Writer, frames [][]byte) error {
	pw := pcapgo.NewWriter(w)
	if err := pw.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		return fmt.Errorf("pcap header: %w", err)
	}
	for i, f := range frames {
		ci := gopacket.CaptureInfo{Timestamp: epoch.Add(time.Duration(i) * time.Microsecond), CaptureLength: len(f), Length: len(f)}
		if err := pw.WritePacket(ci, f); err != nil {
			return fmt.Errorf("pcap frame %d: %w", i, err)
		}
	}
	return nil
}

// WritePcapFile writes frames to path.
func WritePcapFile(path string, frames [][]byte) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write pcap: %w", err)
	}
	if err := WritePcap(f, frames); err != nil {
		f.Close()
		return fmt.Errorf("write pcap %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write pcap %s: %w", path, err)
	}
	return nil
}

// ErrNotEthernet is returned for captures of another link type.
var ErrNotEthernet = errors.New("pcap is not an Ethernet capture")

// ReadPcap reads every frame of an Ethernet pcap (or pcapng). Frames cut
// short by the capture's snap length are refused: replaying them would send
// something other than what was captured.
func ReadPcap(r io.ReadSeeker) ([][]byte, error) {
	var magic [4]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return nil, fmt.Errorf("read pcap header: %w", err)
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("read pcap: %w", err)
	}
	var next func() ([]byte, int, error)
	if magic == [4]byte{0x0a, 0x0d, 0x0d, 0x0a} {
		ng, err := pcapgo.NewNgReader(r, pcapgo.DefaultNgReaderOptions)
		if err != nil {
			return nil, fmt.Errorf("read pcapng: %w", err)
		}
		if ng.LinkType() != layers.LinkTypeEthernet {
			return nil, fmt.Errorf("%w (link type %v)", ErrNotEthernet, ng.LinkType())
		}
		next = func() ([]byte, int, error) {
			d, ci, err := ng.ReadPacketData()
			return d, ci.Length, err
		}
	} else {
		pr, err := pcapgo.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("read pcap: %w", err)
		}
		if pr.LinkType() != layers.LinkTypeEthernet {
			return nil, fmt.Errorf("%w (link type %v)", ErrNotEthernet, pr.LinkType())
		}
		next = func() ([]byte, int, error) {
			d, ci, err := pr.ReadPacketData()
			return d, ci.Length, err
		}
	}
	var frames [][]byte
	for i := 0; ; i++ {
		d, wire, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read pcap frame %d: %w", i, err)
		}
		if wire > len(d) {
			return nil, fmt.Errorf("read pcap frame %d: truncated by the capture (%d of %d bytes)", i, len(d), wire)
		}
		frames = append(frames, d)
	}
	return frames, nil
}

// ReadPcapFile reads the frames of the pcap at path.
func ReadPcapFile(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read pcap: %w", err)
	}
	defer f.Close()
	frames, err := ReadPcap(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return frames, nil
}
