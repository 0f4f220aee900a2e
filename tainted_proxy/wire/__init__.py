"""The MySQL client/server wire protocol, sans-IO: framing, packets, auth, response tracking."""
