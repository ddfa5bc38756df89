// Package config owns keepalived.conf as operators write it for LVS:
// reading it (include globs, comments, one-line blocks, old keyword
// spellings), turning it into a typed, deterministic model (Config), and
// checking that model. Parsing (ParseBytes, ParseFile, ParseFS) and
// validation (Validate) are separate steps; Load does both. Every
// diagnostic reads "file:line: message". Unknown keywords are warnings,
// as keepalived logs and ignores them; invalid values and missing
// required parts are errors.
//
// Reading works in two passes. The first splits files into words (braces
// are words of their own; '#' and '!' start a comment where a word could
// start; "quoted strings" are one word) and builds a statement tree using
// each block's keyword table: how many arguments a keyword takes and
// whether a block follows. That table is what lets the one-line configs
// of the tutorials ("vrrp_script chk { script "killall -0 nginx"
// interval 2 weight -10 fall 2 rise 2 }") split into statements: an
// optional argument that is itself a keyword of the block starts the next
// statement. A statement that begins its own line keeps its whole line,
// as keepalived does. The second pass converts the tree into typed values
// (netip, time.Duration, ranged ints).
//
// Values left out take keepalived's defaults (delay_loop 60s, lb_algo
// wlc, lb_kind NAT, protocol TCP, weight 1, priority 100, advert_int 1s).
// Checkers and VRRP instances carry effective values: a checker's timing
// is its own, else its real server's, else its virtual server's, else the
// default; an instance's version and gratuitous ARP timing are its own,
// else global_defs', else the default.
//
// Where this package differs from keepalived 2.2:
//
//   - keywords match in any case (the tutorials capitalise them), with a
//     warning giving the proper spelling; keepalived ignores them;
//   - one-line blocks are understood; keepalived reads them as garbage;
//   - nb_get_retry is accepted everywhere as the old name of retry.
//
// Two keywords are ours, not keepalived's:
//
//   - global_defs { xvs_interface IFNAME } names the interface xvsd
//     attaches to; xvs_conn_table_size N sizes its connection table.
//   - xvs_via_vip inside a checker block asks for the data-path check:
//     the probe goes to the virtual address through xvs's forwarding to
//     that real server instead of straight to the real server, so it fails
//     when the data path does. The model records it (Checker.ViaVIP);
//     healthcheck implements it.
package config
