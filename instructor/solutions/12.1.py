"""12.1: the samples each process took, most first."""


def answer(df):
    return df.groupby(["pid", "comm"], observed=True)["samples"].sum().sort_values(ascending=False)
