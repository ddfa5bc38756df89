package vrrp

import (
	"context"
	"fmt"
	"net"
	"net/smtp"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// notifyScript picks the notify_<state> script for st.
func notifyScript(st State, master, backup, fault, stop string) string {
	switch st {
	case StateMaster:
		return master
	case StateBackup:
		return backup
	case StateFault:
		return fault
	case StateStop:
		return stop
	}
	return ""
}

// notifyInstance queues the notify scripts and SMTP alert of an instance
// transition: notify_<state> with no arguments, then the generic notify with
// keepalived's "INSTANCE NAME STATE PRIORITY".
func (s *Speaker) notifyInstance(in *instance, st State) {
	c := in.cfg
	specific := notifyScript(st, c.NotifyMaster, c.NotifyBackup, c.NotifyFault, c.NotifyStop)
	if specific != "" {
		s.enqueue(func() { s.runNotify(specific) })
	}
	if c.Notify != "" {
		args := []string{"INSTANCE", c.Name, st.String(), strconv.Itoa(int(in.prio))}
		s.enqueue(func() { s.runNotify(c.Notify, args...) })
	}
	if (c.SMTPAlert || s.cfg.Globals.EnableSMTPAlert) && st != StateStop {
		subj := fmt.Sprintf("[%s] VRRP Instance %s - Entering %s state", s.cfg.Globals.RouterID, c.Name, st)
		body := fmt.Sprintf("=> VRRP instance %s is now %s (priority %d) <=\r\n", c.Name, st, in.prio)
		s.enqueue(func() { s.sendMail(subj, body) })
	}
}

// notifyGroup is notifyInstance for a sync group ("GROUP NAME STATE 0").
func (s *Speaker) notifyGroup(g *group, st State) {
	c := g.cfg
	specific := notifyScript(st, c.NotifyMaster, c.NotifyBackup, c.NotifyFault, c.NotifyStop)
	if specific != "" {
		s.enqueue(func() { s.runNotify(specific) })
	}
	if c.Notify != "" {
		args := []string{"GROUP", c.Name, st.String(), "0"}
		s.enqueue(func() { s.runNotify(c.Notify, args...) })
	}
	if (c.SMTPAlert || s.cfg.Globals.EnableSMTPAlert) && st != StateStop {
		subj := fmt.Sprintf("[%s] VRRP Group %s - Entering %s state", s.cfg.Globals.RouterID, c.Name, st)
		body := fmt.Sprintf("=> VRRP sync group %s is now %s <=\r\n", c.Name, st)
		s.enqueue(func() { s.sendMail(subj, body) })
	}
}

// enqueue runs fn after every earlier notification, off the core goroutine,
// so a slow script or mail server never delays adverts.
func (s *Speaker) enqueue(fn func()) {
	s.nwg.Add(1)
	s.nmu.Lock()
	s.nq = append(s.nq, fn)
	if !s.nrunning {
		s.nrunning = true
		go s.notifyWorker()
	}
	s.nmu.Unlock()
}

func (s *Speaker) notifyWorker() {
	for {
		s.nmu.Lock()
		if len(s.nq) == 0 {
			s.nrunning = false
			s.nmu.Unlock()
			return
		}
		fn := s.nq[0]
		s.nq = s.nq[1:]
		s.nmu.Unlock()
		fn()
		s.nwg.Done()
	}
}

// flushNotify waits until every queued notification ran.
func (s *Speaker) flushNotify() { s.nwg.Wait() }

// notifyTimeout bounds one notify script, as keepalived's script_timeout.
const notifyTimeout = 30 * time.Second

// runNotify runs cmdline with /bin/sh, appending args as "$@".
func (s *Speaker) runNotify(cmdline string, args ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), notifyTimeout)
	defer cancel()
	cmd := shellCommand(ctx, cmdline, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		s.log.Warn("vrrp: notify script failed", "script", cmdline, "args", args, "err", err, "output", strings.TrimSpace(string(out)))
	}
}

func shellCommand(ctx context.Context, cmdline string, args ...string) *exec.Cmd {
	sh := append([]string{"-c", cmdline + ` "$@"`, "sh"}, args...)
	cmd := exec.CommandContext(ctx, "/bin/sh", sh...)
	// A timed-out script is killed with everything it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	return cmd
}

// sendMail delivers one alert through smtp_server.
func (s *Speaker) sendMail(subject, body string) {
	g := &s.cfg.Globals
	if g.SMTPServer == "" || len(g.NotificationEmail) == 0 {
		return
	}
	if err := sendMail(g, subject, body); err != nil {
		s.log.Warn("vrrp: smtp alert failed", "server", g.SMTPServer, "err", err)
	}
}

func sendMail(g *Globals, subject, body string) error {
	addr := g.SMTPServer
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, "25")
	}
	conn, err := net.DialTimeout("tcp", addr, g.SMTPConnectTimeout)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	_ = conn.SetDeadline(time.Now().Add(g.SMTPConnectTimeout))
	host, _, _ := net.SplitHostPort(addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("smtp greeting from %s: %w", addr, err)
	}
	defer c.Close()
	from := g.NotificationEmailFrom
	if from == "" {
		from = "keepalived@localhost"
	}
	if err := c.Mail(from); err != nil {
		return fmt.Errorf("smtp MAIL FROM: %w", err)
	}
	for _, to := range g.NotificationEmail {
		if err := c.Rcpt(to); err != nil {
			return fmt.Errorf("smtp RCPT TO %s: %w", to, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("smtp DATA: %w", err)
	}
	msg := fmt.Sprintf("From: %s\r\nTo: %s\r\nDate: %s\r\nSubject: %s\r\n\r\n%s",
		from, strings.Join(g.NotificationEmail, ", "), time.Now().Format(time.RFC1123Z), subject, body)
	if _, err := w.Write([]byte(msg)); err != nil {
		return fmt.Errorf("smtp body: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("smtp end of data: %w", err)
	}
	return c.Quit()
}

// scriptLoop runs one vrrp_script every interval and reports each result.
func (s *Speaker) scriptLoop(ctx context.Context, sc *Script) {
	t := time.NewTicker(sc.Interval)
	defer t.Stop()
	for {
		ok := runCheck(ctx, sc)
		if ctx.Err() != nil {
			return
		}
		select {
		case s.events <- event{script: sc.Name, ok: ok}:
		case <-ctx.Done():
			return
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// runCheck runs the script once; success is exit status 0 within timeout.
func runCheck(ctx context.Context, sc *Script) bool {
	ctx, cancel := context.WithTimeout(ctx, sc.Timeout)
	defer cancel()
	return shellCommand(ctx, sc.Script).Run() == nil
}
