def open_settings(config, parent, engine=None):
    pass
