"""Readers of the kernel and of psutil that sources use: each answers one question
(which TCP connections, what a process uses) by the fastest way the platform allows, with
the portable one beside it; the sources turn the answers into series."""
