package config

import (
	"net/netip"
	"strings"
)

// The first pass turns the token stream into a tree of statements. It
// knows, per block, each keyword's number of arguments and whether a
// block follows; that is what lets one-line blocks
// ("vrrp_script chk { script "killall -0 nginx" interval 2 }") be split
// into statements. The second pass (parse.go) turns the tree into types.

// Argument counts with special meaning.
const (
	restOfLine = -1 // every word up to the end of the line
	scriptArgs = -2 // one quoted word, or the rest of the line unquoted
)

type kwSpec struct {
	canon    string // keepalived's spelling
	min, max int
	block    string // "" = no block; else a grammar or list name
}

type grammar map[string]kwSpec // lower-case keyword → spec

func g(specs ...kwSpec) grammar {
	m := make(grammar, len(specs))
	for _, s := range specs {
		m[strings.ToLower(s.canon)] = s
	}
	return m
}

func kw(canon string, min, max int) kwSpec { return kwSpec{canon: canon, min: min, max: max} }
func blk(canon string, min, max int, block string) kwSpec {
	return kwSpec{canon: canon, min: min, max: max, block: block}
}

// listSpec describes blocks whose lines are items, not keywords
// (virtual_ipaddress, track_script, group, ...).
type listSpec struct {
	raw        bool                  // keep every line whole
	words      bool                  // each word is an item
	positional func(head string) int // words after the head that belong to it
	options    map[string]int        // option word → its argument count
	isHead     func(t token) bool    // can this word start a new item?
}

var (
	grammars map[string]grammar
	lists    map[string]listSpec
)

func isAddrish(t token) bool {
	s := t.text
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	if i := strings.IndexByte(s, '-'); i >= 0 {
		s = s[:i]
	}
	_, err := netip.ParseAddr(s)
	return err == nil
}

func init() {
	scriptKw := func(name string) kwSpec { return kw(name, 1, scriptArgs) }
	checkerBlocks := []kwSpec{
		blk("TCP_CHECK", 0, 0, "checker"), blk("HTTP_GET", 0, 0, "checker"),
		blk("SSL_GET", 0, 0, "checker"), blk("MISC_CHECK", 0, 0, "checker"),
		blk("SMTP_CHECK", 0, 0, "checker"), blk("DNS_CHECK", 0, 0, "checker"),
		blk("UDP_CHECK", 0, 0, "checker"), blk("PING_CHECK", 0, 0, "checker"),
	}
	timing := []kwSpec{
		kw("retry", 1, 1), kw("nb_get_retry", 1, 1), kw("delay_before_retry", 1, 1),
		kw("warmup", 1, 1), kw("connect_timeout", 1, 1), kw("delay_loop", 1, 1),
	}
	grammars = map[string]grammar{
		"root": g(
			blk("global_defs", 0, 0, "global"),
			blk("static_ipaddress", 0, 0, "ipaddr"),
			blk("static_routes", 0, 0, "raw"),
			blk("static_rules", 0, 0, "raw"),
			blk("vrrp_script", 1, 1, "script"),
			blk("vrrp_sync_group", 1, 1, "syncgroup"),
			blk("vrrp_instance", 1, 1, "instance"),
			blk("virtual_server_group", 1, 1, "vsg"),
			blk("virtual_server", 1, 2, "vs"),
		),
		"global": g(
			kw("router_id", 1, 1), blk("notification_email", 0, 0, "words"),
			kw("notification_email_from", 1, 1), kw("smtp_server", 1, 2),
			kw("smtp_helo_name", 1, 1), kw("smtp_connect_timeout", 1, 1),
			kw("enable_script_security", 0, 0), kw("script_user", 1, 2),
			kw("default_interface", 1, 1),
			kw("vrrp_mcast_group4", 1, 1), kw("vrrp_mcast_group6", 1, 1),
			kw("vrrp_version", 1, 1), kw("vrrp_strict", 0, 0),
			kw("vrrp_skip_check_adv_addr", 0, 0),
			kw("vrrp_garp_master_delay", 1, 1), kw("vrrp_garp_master_repeat", 1, 1),
			kw("vrrp_garp_master_refresh", 1, 1), kw("vrrp_garp_master_refresh_repeat", 1, 1),
			kw("vrrp_garp_lower_prio_delay", 1, 1), kw("vrrp_garp_lower_prio_repeat", 1, 1),
			kw("vrrp_garp_interval", 1, 1), kw("vrrp_gna_interval", 1, 1),
			kw("lvs_timeouts", 2, 6), kw("lvs_sync_daemon", 1, restOfLine),
			kw("xvs_interface", 1, 1), kw("xvs_conn_table_size", 1, 1),
		),
		"script": g(
			scriptKw("script"), kw("interval", 1, 1), kw("timeout", 1, 1),
			kw("weight", 1, 2), kw("rise", 1, 1), kw("fall", 1, 1),
			kw("user", 1, 2), kw("init_fail", 0, 0),
		),
		"syncgroup": g(
			blk("group", 0, 0, "words"),
			scriptKw("notify_master"), scriptKw("notify_backup"), scriptKw("notify_fault"),
			scriptKw("notify_stop"), scriptKw("notify"), kw("smtp_alert", 0, 1),
			blk("track_script", 0, 0, "track"), blk("track_interface", 0, 0, "track"),
		),
		"instance": g(
			kw("state", 1, 1), kw("interface", 1, 1), kw("virtual_router_id", 1, 1),
			kw("priority", 1, 1), kw("advert_int", 1, 1), kw("version", 1, 1),
			blk("authentication", 0, 0, "auth"),
			blk("virtual_ipaddress", 0, 0, "ipaddr"),
			blk("virtual_ipaddress_excluded", 0, 0, "ipaddr"),
			blk("virtual_routes", 0, 0, "raw"), blk("virtual_rules", 0, 0, "raw"),
			blk("track_interface", 0, 0, "track"), blk("track_script", 0, 0, "track"),
			kw("nopreempt", 0, 0), kw("preempt", 0, 0), kw("preempt_delay", 1, 1),
			kw("unicast_src_ip", 1, 1), blk("unicast_peer", 0, 0, "peer"),
			kw("mcast_src_ip", 1, 1),
			scriptKw("notify_master"), scriptKw("notify_backup"), scriptKw("notify_fault"),
			scriptKw("notify_stop"), scriptKw("notify"),
			kw("smtp_alert", 0, 1),
			kw("garp_master_delay", 1, 1), kw("garp_master_repeat", 1, 1),
			kw("garp_master_refresh", 1, 1), kw("garp_master_refresh_repeat", 1, 1),
			kw("garp_lower_prio_delay", 1, 1), kw("garp_lower_prio_repeat", 1, 1),
			kw("use_vmac", 0, 1), kw("vmac_xmit_base", 0, 0), kw("native_ipv6", 0, 0),
			kw("dont_track_primary", 0, 0), kw("strict_mode", 0, 1),
			kw("lvs_sync_daemon_interface", 1, 1), kw("accept", 0, 0), kw("no_accept", 0, 0),
		),
		"auth": g(kw("auth_type", 1, 1), kw("auth_pass", 1, 1)),
		"vs": g(append([]kwSpec{
			kw("lb_algo", 1, 1), kw("lvs_sched", 1, 1),
			kw("lb_kind", 1, 1), kw("lvs_method", 1, 1),
			kw("persistence_timeout", 0, 1), kw("persistence_granularity", 1, 1),
			kw("persistence_engine", 1, 1), kw("protocol", 1, 1), kw("ip_family", 1, 1),
			kw("sorry_server", 2, 2), kw("sorry_server_inhibit", 0, 0),
			kw("sorry_server_lvs_method", 1, 1),
			kw("quorum", 1, 1), kw("hysteresis", 1, 1),
			scriptKw("quorum_up"), scriptKw("quorum_down"),
			kw("ha_suspend", 0, 0), kw("virtualhost", 1, 1),
			kw("alpha", 0, 0), kw("omega", 0, 0), kw("inhibit_on_failure", 0, 0),
			kw("smtp_alert", 0, 1), kw("ops", 0, 0), kw("hashed", 0, 0),
			kw("flag-1", 0, 0), kw("flag-2", 0, 0), kw("flag-3", 0, 0),
			kw("sh-port", 0, 0), kw("sh-fallback", 0, 0),
			kw("mh-port", 0, 0), kw("mh-fallback", 0, 0),
			kw("nat_mask", 1, 1),
			blk("real_server", 1, 2, "rs"),
		}, timing...)...),
		"rs": g(append(append([]kwSpec{
			kw("weight", 1, 1), kw("lvs_method", 1, 1), kw("inhibit_on_failure", 0, 0),
			scriptKw("notify_up"), scriptKw("notify_down"),
			kw("uthreshold", 1, 1), kw("lthreshold", 1, 1),
			kw("alpha", 0, 0), kw("smtp_alert", 0, 1), kw("virtualhost", 1, 1),
		}, timing...), checkerBlocks...)...),
		"checker": g(append([]kwSpec{
			kw("connect_ip", 1, 1), kw("connect_port", 1, 1),
			kw("bindto", 1, 1), kw("bind_port", 1, 1), kw("bind_if", 1, 1),
			kw("fwmark", 1, 1), kw("alpha", 0, 0), kw("xvs_via_vip", 0, 0),
			// HTTP_GET, SSL_GET
			blk("url", 0, 0, "url"), kw("virtualhost", 1, 1), kw("enable_sni", 0, 0),
			kw("tls_compliant", 0, 0), kw("fast_recovery", 0, 1), kw("http_protocol", 1, 1),
			// MISC_CHECK
			scriptKw("misc_path"), kw("misc_timeout", 1, 1), kw("misc_dynamic", 0, 0),
			kw("user", 1, 2),
			// SMTP_CHECK
			kw("helo_name", 1, 1), blk("host", 0, 0, "checker"),
			// DNS_CHECK
			kw("type", 1, 1), kw("name", 1, 1),
			// UDP_CHECK
			kw("payload", 1, 1), kw("require_reply", 0, 1),
			kw("min_reply_length", 1, 1), kw("max_reply_length", 1, 1),
		}, timing...)...),
		"url": g(
			kw("path", 1, 1), kw("digest", 1, 1), kw("status_code", 1, restOfLine),
			kw("regex", 1, 1), kw("regex_no_match", 0, 0), kw("virtualhost", 1, 1),
		),
	}
	lists = map[string]listSpec{
		"raw":   {raw: true},
		"words": {words: true},
		"ipaddr": {
			options: map[string]int{
				"dev": 1, "brd": 1, "broadcast": 1, "label": 1, "scope": 1, "peer": 1,
				"no_track": 0, "nodad": 0, "noprefixroute": 0, "home": 0, "autojoin": 0,
				"preferred_lft": 1, "track_group": 1,
			},
			isHead: isAddrish,
		},
		"track": {
			options: map[string]int{"weight": 1, "reverse": 0},
			isHead:  func(token) bool { return true },
		},
		"peer": {
			options: map[string]int{"min_ttl": 1, "max_ttl": 1},
			isHead:  isAddrish,
		},
		"vsg": {
			positional: func(string) int { return 1 }, // port, or the fwmark number
			isHead:     func(token) bool { return true },
		},
	}
}

// node is one statement: a keyword with its arguments and, for blocks,
// its children (keyword statements or list items).
type node struct {
	pos      Pos
	key      string // lower-case keyword; "" for a list item
	word     string // keyword as written
	canon    string // keepalived's spelling, for messages
	known    bool
	bad      bool // too few arguments: reported, skipped by the second pass
	args     []token
	block    bool
	children []*node
}

type treeParser struct {
	toks  []token
	i     int
	diags *Diagnostics
}

func (p *treeParser) peek() (token, bool) {
	if p.i >= len(p.toks) {
		return token{}, false
	}
	return p.toks[p.i], true
}

// sameLine reports whether the next token continues the current line and
// is a plain word (not a brace).
func (p *treeParser) nextArg() (token, bool) {
	t, ok := p.peek()
	if !ok || t.bol || t.isOpen() || t.isClose() {
		return token{}, false
	}
	return t, true
}

// skipBlock skips a balanced {...} whose '{' was just consumed.
func (p *treeParser) skipBlock() {
	depth := 1
	for p.i < len(p.toks) {
		t := p.toks[p.i]
		p.i++
		if t.isOpen() {
			depth++
		} else if t.isClose() {
			depth--
			if depth == 0 {
				return
			}
		}
	}
}

// parseBlock reads statements of grammar gname until the '}' closing the
// block opened at open (or the end, for the root).
func (p *treeParser) parseBlock(gname string, open *token, what string) []*node {
	gr := grammars[gname]
	var out []*node
	for {
		t, ok := p.peek()
		if !ok {
			if open != nil {
				p.diags.errorf(open.pos, "%s: missing '}' to close the block opened here", what)
			}
			return out
		}
		p.i++
		if t.isClose() {
			if open == nil {
				p.diags.errorf(t.pos, "unexpected '}'")
				continue
			}
			return out
		}
		if t.isOpen() {
			p.diags.warnf(t.pos, "unexpected '{': block skipped")
			p.skipBlock()
			continue
		}
		key := strings.ToLower(t.text)
		spec, known := gr[key]
		if t.quoted {
			known = false
		}
		n := &node{pos: t.pos, key: key, word: t.text, known: known}
		out = append(out, n)
		if !known {
			if _, top := grammars["root"][key]; top && gname != "root" {
				p.diags.warnf(t.pos, "unknown keyword %q ignored (missing '}' before it?)", t.text)
			} else {
				p.diags.warnf(t.pos, "unknown keyword %q ignored", t.text)
			}
			// keepalived ignores the line and any block that follows it.
			for {
				if _, ok := p.nextArg(); !ok {
					break
				}
				n.args = append(n.args, p.toks[p.i])
				p.i++
			}
			if nt, ok := p.peek(); ok && nt.isOpen() {
				p.i++
				n.block = true
				p.skipBlock()
			}
			continue
		}
		n.canon = spec.canon
		if t.text != spec.canon {
			// keepalived matches keywords case-sensitively; we accept the
			// tutorials' capitalised spellings but say so.
			p.diags.warnf(t.pos, "keyword %q should be written %q", t.text, spec.canon)
		}
		p.collectArgs(n, spec, gr, !t.bol)
		if len(n.args) < spec.min {
			n.bad = true
			if spec.min == 1 {
				p.diags.errorf(t.pos, "%s: missing argument", spec.canon)
			} else {
				p.diags.errorf(t.pos, "%s: needs %d arguments, has %d", spec.canon, spec.min, len(n.args))
			}
		}
		if spec.block == "" {
			if nt, ok := p.peek(); ok && nt.isOpen() && !nt.bol {
				p.diags.errorf(nt.pos, "%s: takes no block", spec.canon)
				p.i++
				p.skipBlock()
			}
			continue
		}
		nt, ok := p.peek()
		if !ok || !nt.isOpen() {
			p.diags.errorf(t.pos, "%s: missing '{'", spec.canon)
			n.bad = true
			continue
		}
		p.i++
		n.block = true
		if _, isGrammar := grammars[spec.block]; isGrammar {
			n.children = p.parseBlock(spec.block, &nt, spec.canon)
		} else {
			n.children = p.parseList(lists[spec.block], &nt, spec.canon)
		}
	}
}

// collectArgs takes the statement's arguments. Where the count is open
// (optional arguments, rest of line), a word that is a keyword of the
// block ends them: that is how one-line blocks split into statements. A
// statement that starts its own line takes its whole line as keepalived
// does, so "notify /bin/notify.sh state" keeps its last word.
func (p *treeParser) collectArgs(n *node, spec kwSpec, gr grammar, midLine bool) {
	max := spec.max
	for i := 0; ; i++ {
		t, ok := p.nextArg()
		if !ok {
			return
		}
		if i == 0 && max == scriptArgs {
			if t.quoted {
				max = 1
			} else {
				max = restOfLine
			}
		}
		if max >= 0 && i >= max {
			return
		}
		if i >= spec.min && !t.quoted && (midLine || max != restOfLine) {
			// An optional argument that is a keyword of this block starts
			// the next statement of a one-line block instead.
			if _, isKw := gr[strings.ToLower(t.text)]; isKw {
				return
			}
		}
		n.args = append(n.args, t)
		p.i++
	}
}

// parseList reads the items of a list block.
func (p *treeParser) parseList(ls listSpec, open *token, what string) []*node {
	var out []*node
	for {
		t, ok := p.peek()
		if !ok {
			p.diags.errorf(open.pos, "%s: missing '}' to close the block opened here", what)
			return out
		}
		p.i++
		if t.isClose() {
			return out
		}
		if t.isOpen() {
			p.diags.warnf(t.pos, "unexpected '{': block skipped")
			p.skipBlock()
			continue
		}
		item := &node{pos: t.pos, args: []token{t}}
		out = append(out, item)
		switch {
		case ls.words:
			continue
		case ls.raw:
			for {
				a, ok := p.nextArg()
				if !ok {
					break
				}
				item.args = append(item.args, a)
				p.i++
			}
			continue
		}
		if ls.positional != nil {
			for k := ls.positional(t.text); k > 0; k-- {
				a, ok := p.nextArg()
				if !ok {
					break
				}
				item.args = append(item.args, a)
				p.i++
			}
		}
		for {
			a, ok := p.nextArg()
			if !ok {
				break
			}
			nargs, isOpt := ls.options[strings.ToLower(a.text)]
			if !isOpt {
				if ls.isHead(a) {
					break // a new item on the same line
				}
				nargs = 0 // unknown option: kept, warned about later
			}
			item.args = append(item.args, a)
			p.i++
			for ; nargs > 0; nargs-- {
				v, ok := p.nextArg()
				if !ok {
					break
				}
				item.args = append(item.args, v)
				p.i++
			}
		}
	}
}
