"""Where samples come from: one small class per source, all behind :class:`Source`."""
