# The one unit zwalk shows sizes in, wherever they are written (messages, tables, the bar).


def mib(n: int) -> str:
    """Bytes in MiB: '64.0 MiB', '0.3 MiB' (a few bytes show as '0.0 MiB' only when zero)."""
    if 0 < n < 52429:  # under 0.05 MiB: say how much, rather than 0.0
        return f"{n / (1 << 20):.3f} MiB"
    return f"{n / (1 << 20):.1f} MiB"
