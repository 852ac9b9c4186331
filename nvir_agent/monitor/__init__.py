"""Monitoring: plate maps, viability time courses, alert rules and their
lifecycle, dose-response and the DILI report. Engine code: no Qt, no printing."""
