"""One package per method; importing it registers the method."""
