"""Connectors: one package per external system; each knows its protocol and nothing else."""
