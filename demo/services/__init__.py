"""Small demo services; each talks only to its own site's local broker."""
