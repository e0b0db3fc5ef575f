"""Model loading, the zoo of named models, chat formatting and the unit map."""
