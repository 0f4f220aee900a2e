"""The admin surface: views of a running proxy (snapshot), hints, HTTP, metrics, console."""
