"""The foundation every layer uses, without torch: errors, console, YAML validation, file helpers, statistics."""
