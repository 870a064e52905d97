"""Small helpers without a better home: atomic writes, device resolution."""
