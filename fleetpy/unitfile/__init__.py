"""Unit files: parsing and fleet's options (unit), Jinja templates (template),
systemd's quoting (quoting), container units (container), signatures (signing)."""
