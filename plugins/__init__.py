"""Built-in cncnn plugins (installed as ``cncnn_plugins``): each module registers itself."""
