"""Recipes: complete uses of the library (the quickstart, the ablation, packaging a shipped model).

Recipes import the library; the library never imports a recipe.
"""
