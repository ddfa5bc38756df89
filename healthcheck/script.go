package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// ErrUnsafeScript marks a script refused by the safety rules.
var ErrUnsafeScript = errors.New("unsafe script")

// splitCommand splits a keepalived script line into words; single and
// double quotes group words, as keepalived's parser does.
func splitCommand(s string) ([]string, error) {
	var (
		out   []string
		cur   strings.Builder
		quote rune
		in    bool
	)
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote, in = r, true
		case r == ' ' || r == '\t':
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("script %q: unterminated quote", s)
	}
	if in {
		out = append(out, cur.String())
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("script %q: empty command", s)
	}
	return out, nil
}

// checkScript applies keepalived's script security rules to the program
// of a command line and returns its resolved path. Every path component
// must be owned by root or by us, and not writable by others or by a
// non-root group; a directory with the sticky bit (like /tmp) may be
// writable, because others cannot replace our entries in it.
func checkScript(prog string) (string, error) {
	path := prog
	if !strings.Contains(prog, "/") {
		p, err := exec.LookPath(prog)
		if err != nil {
			return "", fmt.Errorf("script %s: %w", prog, err)
		}
		path = p
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("script %s: %w", prog, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("script %s: %w", prog, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("script %s: %w", prog, err)
	}
	if !fi.Mode().IsRegular() {
		return real, fmt.Errorf("script %s: %w: not a regular file", prog, ErrUnsafeScript)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return real, fmt.Errorf("script %s: %w: not executable", prog, ErrUnsafeScript)
	}
	uid := uint32(os.Getuid())
	for p := real; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return real, fmt.Errorf("script %s: %w", prog, err)
		}
		if why := unsafeMode(fi, uid); why != "" {
			return real, fmt.Errorf("script %s: %w: %s %s", prog, ErrUnsafeScript, p, why)
		}
		if p == "/" || p == "." {
			break
		}
	}
	return real, nil
}

func unsafeMode(fi fs.FileInfo, uid uint32) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "has no ownership information"
	}
	if st.Uid != 0 && st.Uid != uid {
		return fmt.Sprintf("is owned by uid %d", st.Uid)
	}
	m := fi.Mode()
	sticky := m.IsDir() && m&fs.ModeSticky != 0
	if m.Perm()&0o002 != 0 && !sticky {
		return "is world-writable"
	}
	if m.Perm()&0o020 != 0 && st.Gid != 0 && !sticky {
		return fmt.Sprintf("is writable by group %d", st.Gid)
	}
	return ""
}

// errScriptTimeout marks a script killed at its deadline.
var errScriptTimeout = errors.New("timed out")

// runScript runs argv until it exits or ctx ends; on ctx end the whole
// process group is killed so no child outlives the check. It returns the
// exit status.
func runScript(ctx context.Context, argv []string, env []string) (int, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	// A grandchild holding stdout would keep Wait busy; we give no pipes,
	// but bound Wait anyway.
	cmd.WaitDelay = time.Second
	cmd.Env = append(os.Environ(), env...)
	err := cmd.Run()
	if ctx.Err() != nil {
		return -1, errScriptTimeout
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				return -1, fmt.Errorf("killed by %v", ws.Signal())
			}
			return ee.ExitCode(), nil
		}
		return -1, err
	}
	return 0, nil
}
