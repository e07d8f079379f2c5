"""The daemon: runtime wiring, scheduler, HTTP app, systemd notification."""
