"""One module per stage; each reads top to bottom as its method's steps and exposes ``main(params)``."""
