"""Dose-response fitting, DILI margins of safety, figures and the HTML report."""
