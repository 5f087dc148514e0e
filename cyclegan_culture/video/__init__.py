"""Video: read and write clips (PyAV, the [video] extra) and keep stylized frames steady over time."""
