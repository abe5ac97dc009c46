"""Accounts, tokens, roles and keys: who may do what on a Boardcast server.

The modules here open no socket; the gateway (:mod:`gateway.auth`) does the I/O.
"""
