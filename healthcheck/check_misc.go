package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// miscProber is MISC_CHECK: exit 0 up, 1 down, and with misc_dynamic
// 2..255 up with weight status-2.
type miscProber struct {
	argv     []string
	dynamic  bool
	insecure bool
	log      *slog.Logger
	desc     string // "[ip]:tcp:port VS ..." for messages

	mu      sync.Mutex
	lastErr string // last refusal logged, to log each reason once
}

func newMiscProber(o *MiscOptions, insecure bool, log *slog.Logger, desc string) (*miscProber, error) {
	if o == nil || o.Path == "" {
		return nil, errors.New("MISC_CHECK: misc_path is required")
	}
	argv, err := splitCommand(o.Path)
	if err != nil {
		return nil, fmt.Errorf("MISC_CHECK misc_path: %w", err)
	}
	return &miscProber{argv: argv, dynamic: o.Dynamic, insecure: insecure, log: log, desc: desc}, nil
}

func (p *miscProber) probe(ctx context.Context) result {
	argv, err := vetScript(p.argv, p.insecure)
	if err != nil {
		p.mu.Lock()
		if msg := err.Error(); msg != p.lastErr {
			p.lastErr = msg
			p.log.Warn(fmt.Sprintf("Misc check for [%s] refused: %v", p.desc, err))
		}
		p.mu.Unlock()
		return fail("refused: %v", err)
	}
	code, err := runScript(ctx, argv, nil)
	switch {
	case errors.Is(err, errScriptTimeout):
		return fail("Misc check for [%s] by [%s] timed out", p.desc, p.argv[0])
	case err != nil:
		return fail("Misc check for [%s] by [%s] failed: %v", p.desc, p.argv[0], err)
	case code == 0:
		return pass()
	case code == 1 || !p.dynamic:
		return fail("Misc check for [%s] by [%s] failed with exit status %d", p.desc, p.argv[0], code)
	}
	return result{ok: true, weight: code - 2}
}

// vetScript resolves argv[0] and applies the safety rules; insecure logs
// nothing and runs anyway (the caller logged the opt-in).
func vetScript(argv []string, insecure bool) ([]string, error) {
	path, err := checkScript(argv[0])
	if err != nil && (!errors.Is(err, ErrUnsafeScript) || !insecure) {
		return nil, err
	}
	out := append([]string{path}, argv[1:]...)
	return out, nil
}
