"""Robot interface types, serial drivers, protocol codecs and device emulators. Never imports sim/."""
