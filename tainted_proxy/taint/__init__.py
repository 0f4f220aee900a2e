"""Statement taint classification: what each client statement does to its session.

This package owns the answer to "what does this COM_QUERY text do to the
session it runs in?" for the pool (which decides from it whether a session
can leave its upstream connection), for the taint reports, and for the
``tainted-proxy classify`` CLI.  It is pure: no sockets, no Trio, no I/O.

Modules, one concept each:

* `effects`: the effect names (`Effect`), pin reasons and the `Classification`
  result;
* `lexer`: the MySQL/MariaDB tokenizer (quotes, comments, executable
  comments, statement splitting, ANSI_QUOTES / NO_BACKSLASH_ESCAPES);
* `gate`: the lexical gate that proves ordinary DML clean in ~1 µs;
* `rules`: the per-statement rules, decided from tokens;
* `settings`: canonical variable names and literal values;
* `crosscheck`: sqlglot's second opinion on DML candidates;
* `classifier`: `classify()`, with its LRU cache;
* `fingerprint`: statement fingerprints for reports;
* `cli`: ``tainted-proxy classify``.

The rules are specified in ``specs/taint-rules.md``; user documentation is
``docs/classifier.md``.
"""

from tainted_proxy.taint.classifier import classify, classify_flags
from tainted_proxy.taint.effects import ALL_EFFECTS, PIN_REASONS, Classification, Effect
from tainted_proxy.taint.fingerprint import fingerprint
from tainted_proxy.taint.lexer import flags_from_status

__all__ = [
    "ALL_EFFECTS",
    "PIN_REASONS",
    "Classification",
    "Effect",
    "classify",
    "classify_flags",
    "fingerprint",
    "flags_from_status",
]
