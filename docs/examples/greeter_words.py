"""The walk-through's Python: one function a spec can `call`."""


def count(session, line, match):
    # match["rest"] is what followed the rule's prefix ("SAY ").
    return str(len(match["rest"].split()))
