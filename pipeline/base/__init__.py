"""The bottom layer: basics every package uses and that import nothing of the project.

``errors`` (exceptions with exit codes), ``yamlconf`` (the YAML loader with file:line errors and
typed sections), ``frames`` (the frame type), ``imageio`` (the one strict image decoder),
``addresses`` (``X:<column>, Y:<row>``), ``atomic`` (atomic file writes), ``stats``
(percentiles).  Nothing here does I/O to cameras or sockets.
"""
