"""Culture models ready to use by name (catalog.py), and the example photos the app offers."""
