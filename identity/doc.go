// Package identity reads and writes the key files of the unibus membership
// protocol (docs/protocol.md §3, "Identity files"): the identity file that
// holds an endpoint's two seeds, and the public file that carries its public
// keys to an admin.
//
// Both are UTF-8 text, one `name: value` per line; blank lines and lines
// starting with # are skipped and white space around names and values is
// trimmed. Parsing is strict, as for everything else of the protocol: a
// name the format does not define, a name given twice, or a line that is not
// `name: value` refuses the file. memberctl, membershipd
// (--bootstrap-admin) and the client library all read key files through
// this package, so one file is accepted or refused the same way by each.
package identity
