"""Server classes that tests serve with ``wsgate appserver --app tests.apps.<module>:<Class>``."""
