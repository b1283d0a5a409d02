"""Thin KFP components: each declares a typed interface and calls one cloudml function."""
