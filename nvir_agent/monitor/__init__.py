"""Monitoring: plate maps, viability time courses, alert rules and their
lifecycle, notifications and the engine listener. Engine code: no Qt, no printing."""
