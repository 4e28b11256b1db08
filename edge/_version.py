__version__ = "0.1.0"
BUNDLE_SCHEMA_VERSION = 1
