"""The local web app (cyclegan-culture app): an optional extra, pip install "cyclegan-culture[app]"."""
