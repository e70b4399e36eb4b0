package org.example;

import java.util.ArrayList;
import java.util.List;

/** A stack of strings. */
public class Sample {
    private final List<String> items = new ArrayList<>();

    public Sample() {
    }

    /** Pushes s on top. */
    public void push(String s) {
        items.add(s);
    }

    @Override
    public String toString() {
        StringBuilder b = new StringBuilder();
        for (String s : items) {
            b.append(s).append(',');
        }
        return b.toString();
    }
}
