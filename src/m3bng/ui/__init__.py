"""The dashboard (``/ui``): one static page and its script, served by the app itself.

No build step and nothing fetched from elsewhere: the page must work on a machine without
internet access, and everything it shows comes from the ops API with the user's own token.
"""

from m3bng.ui.routes import router

__all__ = ["router"]
