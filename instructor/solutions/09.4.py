"""09.4: the log2 latency histogram per thread, from the events frame."""


def answer(df):
    slot = df["latency_ns"].map(lambda n: max(int(n).bit_length(), 1))
    return df.assign(slot=slot).groupby(["tid", "slot"]).size()
