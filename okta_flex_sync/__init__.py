"""okta-flex-sync: reconcile Twilio Flex TaskRouter workers with Okta."""

__version__ = "0.1.0"
