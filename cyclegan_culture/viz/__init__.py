"""What people look at: HTML pages (and, later, live monitoring)."""
